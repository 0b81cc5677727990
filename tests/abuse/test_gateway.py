"""Sign-in under one hostile client address (issue 25, item 7), at the
production defaults: a burst of sign-in starts is limited per address while auth keeps
answering everyone (and a whole sign-in from elsewhere still works). One address holding
its share of requests under way is tested in tests/e2e/test_gateway_routing.py, at a small
GATEWAY_IN_FLIGHT_PER_ADDRESS."""

import asyncio
from collections import Counter

from tests.e2e.oidc_browser import walk
from tests.helpers import client_from

SIGN_IN_STARTS = 30  # SIGN_IN_STARTS_PER_MIN's default


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
