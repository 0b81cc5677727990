"""The shared identity dependency, in a small service of its own that verifies tokens with the
public keys of a real auth service (served over HTTP in a thread, keys from a file)."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from joserfc import jwt
from joserfc.jwk import RSAKey

from avatar_auth.app import create_app as auth_app
from avatar_auth.settings import AuthSettings
from avatar_auth.store import UserStore
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.app import create_service_app
from avatar_shared.identity import CallerIdentity
from avatar_shared.settings import ServiceSettings
from avatar_shared.tokens import SigningKeys, generate_key, read_key_set, write_key_set

FRONTEND = "http://localhost:3000"
ISSUER, AUDIENCE = "avatar-forge-auth", "avatar-forge"

probe_routes = APIRouter()


@probe_routes.get("/who")
@probe_routes.post("/who")
async def who(identity: CallerIdentity) -> dict[str, object]:
    return {"user_id": identity.user_id, "signed_in": identity.signed_in}


def start_auth(redis_url: str, keys_file: Path, port: int = 0):
    settings = AuthSettings(redis_url=redis_url, signing_keys_file=str(keys_file))
    return serve_in_thread(auth_app(settings), port=port, lifespan="on")


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_key_set(path, [generate_key()])
    return path


@pytest.fixture
def signer(keys_file: Path) -> SigningKeys:
    return SigningKeys(read_key_set(keys_file), ISSUER, AUDIENCE, lifetime_s=3600)


@pytest.fixture
def auth_url(redis_url, keys_file) -> Iterator[str]:
    with start_auth(redis_url, keys_file) as url:
        yield url


def probe_app(redis_url: str, auth_url: str, **settings: object):
    config = ServiceSettings(redis_url=redis_url, auth_url=auth_url, **settings)
    return create_service_app("probe", config, probe_routes)


@pytest.fixture
async def probe(app_client, redis_url, auth_url) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=0)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(claims: dict, key: RSAKey, header: dict | None = None) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, claims, key, ["RS256"])


def hand_made(header: dict, claims: dict, sign=lambda _: b"") -> str:
    """A compact JWS built by hand, for the algorithms no library will sign with."""
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")  # noqa: E731
    signing_input = part(header) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(sign(signing_input)).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def good_claims(**changes) -> dict:
    now = int(time.time())
    claims = {"sub": "u-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return {**claims, "jti": "j-1", **changes}


async def test_a_valid_token_is_its_user_by_header_or_cookie(probe, signer):
    token, _ = signer.issue("user-7")
    by_header = await probe.get("/who", headers=bearer(token))
    probe.cookies.set("access_token", token)
    by_cookie = await probe.get("/who")
    for response in (by_header, by_cookie):
        assert response.json() == {"user_id": "user-7", "signed_in": True}


def forged_tokens(signer: SigningKeys) -> dict[str, str]:
    key = signer.keys.keys[0]
    stranger = generate_key()
    # HS256 keyed with the public key's PEM: the classic algorithm confusion.
    public_pem = key.as_pem(private=False)
    hs256 = lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()  # noqa: E731
    return {
        "garbage": "not-a-jwt",
        "expired": signed(good_claims(exp=int(time.time()) - 120), key),
        "another audience": signed(good_claims(aud="another-app"), key),
        "another issuer": signed(good_claims(iss="https://evil.example"), key),
        "no jti": signed({k: v for k, v in good_claims().items() if k != "jti"}, key),
        "unknown key": signed(good_claims(), stranger),
        "our kid, another key": signed(good_claims(), stranger, {"kid": key.kid}),
        "alg none": hand_made({"alg": "none", "kid": key.kid}, good_claims()),
        "HS256 with the public key": hand_made(
            {"alg": "HS256", "kid": key.kid}, good_claims(), hs256
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "expired",
        "another audience",
        "another issuer",
        "no jti",
        "unknown key",
        "our kid, another key",
        "alg none",
        "HS256 with the public key",
    ],
)
async def test_every_forged_token_is_401_never_anonymous(probe, signer, kind):
    token = forged_tokens(signer)[kind]
    response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_token"


async def test_a_bad_cookie_token_is_refused_and_deleted(probe, signer):
    probe.cookies.set("access_token", forged_tokens(signer)["expired"])
    response = await probe.get("/who")
    assert response.status_code == 401
    assert any(c.startswith("access_token=") and "Max-Age=0" in c for c in _set_cookies(response))


async def test_a_signed_out_token_is_refused(probe, auth_url, signer, redis_url):
    token, _ = signer.issue("user-8")
    async with httpx.AsyncClient(base_url=auth_url, trust_env=False) as browser:
        browser.cookies.set("access_token", token)
        await browser.post("/api/auth/logout")
    response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


async def test_rotation_the_previous_key_verifies_and_a_new_kid_is_fetched(
    app_client, redis_url, tmp_path, keys_file, signer
):
    old_token, _ = signer.issue("user-old")
    rotated = tmp_path / "rotated.json"
    write_key_set(rotated, [generate_key(), *signer.keys.keys])  # new key first, old kept
    new_token, _ = SigningKeys(read_key_set(rotated), ISSUER, AUDIENCE, 3600).issue("user-new")
    port = free_port()
    auth_url = f"http://127.0.0.1:{port}"
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=0)) as probe:
        with start_auth(redis_url, keys_file, port):
            assert (await probe.get("/who", headers=bearer(old_token))).status_code == 200
        # auth restarts with the rotated keys: the probe has only the old key cached.
        with start_auth(redis_url, rotated, port):
            for token, user in ((new_token, "user-new"), (old_token, "user-old")):
                response = await probe.get("/who", headers=bearer(token))
                assert response.json()["user_id"] == user


async def test_concurrent_first_requests_wait_for_one_key_fetch(
    app_client, redis_url, auth_url, signer
):
    token, _ = signer.issue("user-10")
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=10)) as probe:
        responses = await asyncio.gather(
            *(probe.get("/who", headers=bearer(token)) for _ in range(5))
        )
    assert [r.status_code for r in responses] == [200] * 5


async def test_tokens_need_auth_reachable_once(app_client, redis_url, signer):
    nobody = f"http://127.0.0.1:{free_port()}"
    token, _ = signer.issue("user-9")
    async with app_client(probe_app(redis_url, nobody)) as probe:
        response = await probe.get("/who", headers=bearer(token))
    assert response.status_code == 503 and response.json()["error"]["code"] == "auth_unavailable"


def _set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


async def test_an_anonymous_caller_gets_an_id_of_its_own_that_sticks(probe):
    first = await probe.get("/who")
    cookie = next(c for c in _set_cookies(first) if c.startswith("anon_id="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    again = await probe.get("/who")
    assert first.json() == again.json() and first.json()["signed_in"] is False
    assert not _set_cookies(again)  # nothing new to set


async def test_cookies_are_secure_when_the_site_is_https(app_client, redis_url, auth_url):
    https = probe_app(redis_url, auth_url, public_base_url="https://avatar.example")
    async with app_client(https) as probe:
        cookie = (await probe.get("/who")).headers["set-cookie"]
    assert "Secure" in cookie.split("; ")


async def test_anonymous_ids_cannot_be_chosen_or_forged(probe):
    mine = (await probe.get("/who")).json()["user_id"]
    value = probe.cookies["anon_id"]
    probe.cookies.set("anon_id", value.replace(mine, "anon-victim"))
    forged = await probe.get("/who", headers={"X-User-Id": "anon-victim"})
    assert forged.json()["user_id"] not in ("anon-victim", mine)


async def test_a_cookie_in_any_characters_is_just_not_an_id(probe):
    raw = "anon_id=anon-x.\u00e9\u00e9".encode()  # bytes a client may send, not ASCII
    response = await probe.get("/who", headers=[(b"cookie", raw)])
    assert response.status_code == 200 and response.json()["user_id"] != "anon-x"


async def test_a_revocation_outlives_the_token_by_the_clock_leeway(redis):
    await UserStore(redis).revoke("j-9", int(time.time()) + 5)
    assert await redis.ttl("auth:revoked:j-9") > 30


async def test_writes_with_our_cookies_from_a_foreign_page_are_refused(probe):
    await probe.get("/who")  # has an anonymous cookie now
    evil = await probe.post("/who", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin_refused"
    assert (await probe.post("/who", headers={"Origin": FRONTEND})).status_code == 200
    assert (await probe.post("/who")).status_code == 200  # not a browser: no Origin


async def test_auth_required_refuses_anonymous_writes_only(app_client, redis_url, auth_url):
    async with app_client(probe_app(redis_url, auth_url, auth_required=True)) as probe:
        assert (await probe.get("/who")).status_code == 200
        refused = await probe.post("/who")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "login_required"
