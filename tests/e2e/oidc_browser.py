"""A browser's part of an OpenID sign-in, played with httpx against the real demo provider:
follow each redirect by hand, fill the provider's login and consent forms, and stop where
the flow leaves for the frontend (or wherever `stop_at` says)."""

import re
from collections.abc import Callable
from urllib.parse import urljoin

import httpx

from avatar_devstack.stack import Stack

FRONTEND = "http://localhost:3000"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_PROMPT = re.compile(r'name="prompt" value="(\w+)"')


def browser(stack: Stack) -> httpx.AsyncClient:
    """A cookie-keeping client on the gateway under the name the redirect URI uses."""
    return httpx.AsyncClient(
        base_url=f"http://localhost:{stack.ports.gateway}", trust_env=False, timeout=10
    )


async def walk(
    client: httpx.AsyncClient,
    response: httpx.Response,
    login: str = "alice",
    stop_at: Callable[[str], bool] = lambda url: url.startswith(FRONTEND),
) -> httpx.Response:
    """From a response on the way to the provider, on until a redirect `stop_at` accepts;
    that last response is returned (its location not followed)."""
    url = str(response.url)
    for _ in range(20):
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            if stop_at(url):
                return response
            response = await client.get(url)
            continue
        assert response.status_code == 200, response.text
        action = urljoin(url, _FORM_ACTION.search(response.text).group(1))
        prompt = _PROMPT.search(response.text).group(1)
        form = {"prompt": prompt, "login": login, "password": "any"} if prompt == "login" else {}
        response = await client.post(action, data={"prompt": prompt, **form})
    raise AssertionError("the sign-in did not finish in 20 steps")


async def sign_in(client: httpx.AsyncClient, login: str = "alice", **params: str) -> httpx.Response:
    """The whole flow; returns the callback's redirect to the frontend."""
    started = await client.get("/api/auth/google/login", params=params)
    assert started.status_code == 302, started.text
    return await walk(client, started, login)
