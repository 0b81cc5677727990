"""The gateway and sign-in under one hostile client address (issue 25, items 7 and 9), at the
production defaults: a burst of sign-in starts is limited per address while auth keeps
answering everyone (and a whole sign-in from elsewhere still works); one address holding
its share of requests under way is refused while others are served."""

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from avatar_devstack.stack import Stack
from tests.e2e.oidc_browser import walk
from tests.helpers import client_from

SIGN_IN_STARTS = 30  # SIGN_IN_STARTS_PER_MIN's default
IN_FLIGHT = 100  # GATEWAY_IN_FLIGHT_PER_ADDRESS's default


async def test_a_burst_of_sign_in_starts_is_limited_per_address_and_auth_answers_on(abuse_stack):
    public = abuse_stack.env["PUBLIC_BASE_URL"]  # the name the provider sends browsers back to
    async with (
        client_from(public, "127.0.30.1", timeout=30) as attacker,
        client_from(public, "127.0.30.2", timeout=30) as neighbour,
    ):
        starts, answers = await asyncio.gather(
            asyncio.gather(*(attacker.get("/api/auth/google/login") for _ in range(64))),
            asyncio.gather(*(neighbour.get("/api/auth/me") for _ in range(16))),
        )
    assert Counter(r.status_code for r in starts) == {302: SIGN_IN_STARTS, 429: 64 - SIGN_IN_STARTS}
    refused = next(r for r in starts if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0
    # Auth answered the others all along (not the gateway's "no available server").
    assert [r.status_code for r in answers] == [401] * 16

    # Another address signs in, the whole way: the provider's pages, then the code exchanged
    # for tokens and the ID token checked against the provider's keys, over the one HTTP
    # client every start above shared.
    async with client_from(public, "127.0.30.3", timeout=10) as browser:
        started = await browser.get("/api/auth/google/login")
        assert started.status_code == 302, started.text
        back = await walk(browser, started, stop_at=lambda url: "/auth/callback" in url)
        assert "error=" not in back.headers["location"], back.headers["location"]
        me = await browser.get("/api/auth/me")
    assert me.status_code == 200, me.text


@contextmanager
def requests_never_finished(stack: Stack, address: str, count: int) -> Iterator[None]:
    """`count` requests from `address` whose bodies never come: each under way at the gateway
    (its body limit waits for the rest) until the read timeout or the end of the block."""
    held = []
    try:
        for _ in range(count):
            connection = socket.create_connection(
                ("127.0.0.1", stack.ports.gateway), source_address=(address, 0)
            )
            held.append(connection)
            connection.sendall(
                b"POST /api/characters HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
        yield
    finally:
        for connection in held:
            connection.close()


async def test_an_address_holding_its_share_is_refused_while_others_are_served(abuse_stack):
    """Traefik counts an address's requests per route: the held ones are the characters
    route's, where the address is refused; another address is served there and elsewhere."""
    async with (
        client_from(abuse_stack.gateway_url, "127.0.31.1") as attacker,
        client_from(abuse_stack.gateway_url, "127.0.31.2") as neighbour,
    ):
        # More than its share: the ones past it are refused at once, and a request of the
        # checks below cannot take a place one of them would have held.
        with requests_never_finished(abuse_stack, "127.0.31.1", IN_FLIGHT + 20):
            for _ in range(100):  # until the gateway has read every held request's headers
                refused = await attacker.get("/api/characters/presets")
                if refused.status_code == 429:
                    break
                await asyncio.sleep(0.05)
            assert refused.status_code == 429, refused.text
            assert (await neighbour.get("/api/characters/presets")).status_code == 200
            served = await neighbour.get("/")
            assert served.status_code == 200 and served.text == "Avatar Forge Backend Running"
        for _ in range(100):  # its held requests closed, the address is served again
            if (again := await attacker.get("/api/characters/presets")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert again.status_code == 200
