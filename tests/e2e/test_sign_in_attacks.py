"""Sign-in under attack, against the real demo OpenID provider: a tampered or replayed
state, a callback delivered to another browser, and ID tokens swapped in the token response
(one for another app, one replayed from an earlier sign-in) by a man in the middle at the
provider's token endpoint. Each ends at the frontend with an error, and nothing is issued."""

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from avatar_auth.app import create_app as auth_app
from avatar_auth.provider import state_cookie
from avatar_auth.settings import AuthSettings
from avatar_devstack.testing import OTHER_OIDC_CLIENT
from avatar_emulators.server import serve_in_thread
from tests.e2e.oidc_browser import FRONTEND, browser, walk

CALLBACK = "/api/auth/google/callback"


def frontend_error(response: httpx.Response) -> str | None:
    location = response.headers["location"]
    assert location.startswith(f"{FRONTEND}/auth/callback"), location
    return parse_qs(urlsplit(location).query).get("error", [None])[0]


async def to_callback(client: httpx.AsyncClient, login: str = "mallory") -> str:
    """Signs in at the provider and stops before the callback: its URL."""
    started = await client.get("/api/auth/google/login")
    last = await walk(client, started, login, stop_at=lambda url: CALLBACK in url)
    return last.headers["location"]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_a_tampered_state_is_refused(stack):
    async with browser(stack) as client:
        callback = await to_callback(client)
        response = await client.get(with_query(callback, state="forged-state"))
        assert frontend_error(response) == "state_mismatch"
        assert "access_token" not in client.cookies


async def test_a_callback_in_another_browser_is_refused(stack):
    """Login CSRF: the victim's browser gets a callback for the attacker's sign-in."""
    async with browser(stack) as attacker, browser(stack) as victim:
        callback = await to_callback(attacker)
        response = await victim.get(callback)
        assert frontend_error(response) == "state_mismatch"
        assert "access_token" not in victim.cookies


async def test_a_callback_works_once(stack):
    async with browser(stack) as client:
        callback = await to_callback(client)
        first = await client.get(callback)
        assert frontend_error(first) is None and "access_token" in client.cookies
        client.cookies.delete("access_token")
        state = parse_qs(urlsplit(callback).query)["state"][0]
        client.cookies.set(state_cookie(state), f"1.{state}")  # as the start had set it
        replay = await client.get(callback)
        assert frontend_error(replay) == "state_mismatch"
        assert "access_token" not in client.cookies


class TokenEndpointProxy:
    """Stands between auth and the provider: passes everything on, records the ID tokens
    the provider issues, and can swap in another one."""

    def __init__(self, provider: str) -> None:
        self.provider, self.url = provider, ""
        self.issued: list[str] = []
        self.swap_in: str | None = None
        self.app = FastAPI()
        self.app.get("/.well-known/openid-configuration")(self.discovery)
        self.app.post("/token")(self.token)

    async def discovery(self) -> JSONResponse:
        async with httpx.AsyncClient(trust_env=False) as http:
            metadata = (await http.get(f"{self.provider}/.well-known/openid-configuration")).json()
        return JSONResponse({**metadata, "token_endpoint": f"{self.url}/token"})

    async def token(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient(trust_env=False) as http:
            answer = await http.post(
                f"{self.provider}/token", content=await request.body(), headers=headers
            )
        body = answer.json()
        if "id_token" in body:
            self.issued.append(body["id_token"])
            body["id_token"] = self.swap_in or body["id_token"]
        return JSONResponse(body, status_code=answer.status_code)


@contextmanager
def auth_behind(proxy: TokenEndpointProxy, stack, client_id: str, secret: str) -> Iterator[str]:
    """An auth service of its own whose provider is reached through the proxy."""
    with serve_in_thread(proxy.app) as proxy.url:
        settings = AuthSettings(
            redis_url=stack.env["REDIS_URL"],
            public_base_url=stack.env["PUBLIC_BASE_URL"],  # the redirect URI the provider knows
            oidc_discovery_url=f"{proxy.url}/.well-known/openid-configuration",
            google_client_id=client_id,
            google_client_secret=secret,
            # It counts sign-in starts in the stack's Redis, where the suite's are counted too.
            sign_in_starts_per_min=int(stack.env["SIGN_IN_STARTS_PER_MIN"]),
        )
        with serve_in_thread(auth_app(settings), lifespan="on") as url:
            yield url


@pytest.fixture
def provider(stack) -> str:
    return stack.env["OIDC_DISCOVERY_URL"].removesuffix("/.well-known/openid-configuration")


async def sign_in_through(auth_url: str, stack) -> httpx.Response:
    """The browser starts at and returns to the proxied auth service."""
    async with browser(stack) as client:
        client.base_url = httpx.URL(auth_url)
        callback = await to_callback(client)
        return await client.get(auth_url + CALLBACK + "?" + urlsplit(callback).query)


@pytest.fixture
async def our_client(stack) -> AsyncIterator[tuple[str, str]]:
    yield stack.env["GOOGLE_CLIENT_ID"], stack.env["GOOGLE_CLIENT_SECRET"]


def failure_reasons(captured: str) -> list[str]:
    """What the auth service logged for each failed sign-in (its JSON log lines)."""
    return [
        json.loads(line)["reason"]
        for line in captured.splitlines()
        if line.startswith("{") and '"sign-in failed"' in line
    ]


async def test_an_id_token_for_another_app_is_refused(stack, provider, our_client, capfd):
    theirs = TokenEndpointProxy(provider)
    with auth_behind(theirs, stack, *OTHER_OIDC_CLIENT) as other_auth:
        assert frontend_error(await sign_in_through(other_auth, stack)) is None
    ours = TokenEndpointProxy(provider)
    ours.swap_in = theirs.issued[0]  # a valid token of the same provider, aud another-app
    with auth_behind(ours, stack, *our_client) as auth_url:
        response = await sign_in_through(auth_url, stack)
    assert frontend_error(response) == "invalid_id_token"
    assert "access_token" not in response.cookies
    assert "'aud'" in failure_reasons(capfd.readouterr().err)[-1]  # checked before the nonce


async def test_a_replayed_id_token_fails_on_its_nonce(stack, provider, our_client, capfd):
    proxy = TokenEndpointProxy(provider)
    with auth_behind(proxy, stack, *our_client) as auth_url:
        assert frontend_error(await sign_in_through(auth_url, stack)) is None
        proxy.swap_in = proxy.issued[0]  # the first sign-in's ID token, its nonce spent
        response = await sign_in_through(auth_url, stack)
    assert frontend_error(response) == "invalid_id_token"
    assert "access_token" not in response.cookies
    assert "nonce" in failure_reasons(capfd.readouterr().err)[-1]
