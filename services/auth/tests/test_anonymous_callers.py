"""Anonymous callers, cookie flags, cross-site writes and AUTH_REQUIRED, as every service
sees them through the shared identity dependency."""

from .helpers import FRONTEND, probe_app, set_cookies


async def test_an_anonymous_caller_gets_an_id_of_its_own_that_sticks(probe):
    first = await probe.get("/who")
    cookie = next(c for c in set_cookies(first) if c.startswith("anon_id="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    again = await probe.get("/who")
    assert first.json() == again.json() and first.json()["signed_in"] is False
    assert not set_cookies(again)  # nothing new to set


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


async def test_writes_with_our_cookies_from_a_foreign_page_are_refused(probe):
    await probe.get("/who")  # has an anonymous cookie now
    evil = await probe.post("/who", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin_refused"
    assert (await probe.post("/who", headers={"Origin": FRONTEND})).status_code == 200
    assert (await probe.post("/who")).status_code == 200  # not a browser: no Origin


async def test_writes_from_a_foreign_page_are_refused_before_an_id_is_minted(probe):
    """Login CSRF: a cross-site form post from a browser with no cookie yet would be given an
    anonymous id (Set-Cookie on that navigation) holding what the attacker posted."""
    foreign = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, or a post redirected across sites
        {"Sec-Fetch-Site": "cross-site"},  # a browser's word for it when it sends no Origin
    ]
    for headers in foreign:
        refused = await probe.post("/who", headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "cross_origin_refused"
        assert not set_cookies(refused) and not probe.cookies  # nothing minted
    # Reads are not refused, and our own pages and callers that are not browsers still write.
    assert (await probe.get("/who", headers={"Origin": "https://evil.example"})).status_code == 200
    probe.cookies.clear()
    for headers in ({"Origin": FRONTEND}, {"Sec-Fetch-Site": "same-site"}, {}):
        assert (await probe.post("/who", headers=headers)).status_code == 200, headers
        probe.cookies.clear()


async def test_auth_required_refuses_anonymous_writes_only(app_client, redis_url, auth_url):
    async with app_client(probe_app(redis_url, auth_url, auth_required=True)) as probe:
        assert (await probe.get("/who")).status_code == 200
        refused = await probe.post("/who")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "login_required"


async def test_an_address_mints_a_limited_number_of_ids_then_shares_one(
    app_client, redis_url, auth_url
):
    app = probe_app(redis_url, auth_url, anon_ids_per_address=3)
    async with app_client(app, address="203.0.113.7") as crowd:
        fresh = [(await cookieless(crowd)).json()["user_id"] for _ in range(3)]
        past = [await cookieless(crowd) for _ in range(2)]
        crowd.cookies.clear()
        write = await crowd.post("/who")
    assert len(set(fresh)) == 3  # a household gets ids of its own...
    shared = {response.json()["user_id"] for response in past}
    assert len(shared) == 1 and not shared & set(fresh)  # ...then reads as the address's
    assert all("anon_id=" not in " ".join(set_cookies(r)) for r in past)  # not kept by them
    # A shared id's data would be every neighbour's to read and change: it writes nothing.
    assert write.status_code == 429 and write.json()["error"]["code"] == "rate_limited"
    assert 3000 < int(write.headers["Retry-After"]) <= 3600  # when the first id's hour ends
    async with app_client(app, address="198.51.100.9") as neighbour:
        assert (await neighbour.get("/who")).json()["user_id"] not in shared | set(fresh)
        assert set_cookies(await cookieless(neighbour))  # its own allowance
        assert (await neighbour.post("/who")).status_code == 200


async def test_a_returning_caller_keeps_its_id_past_the_address_allowance(
    app_client, redis_url, auth_url
):
    app = probe_app(redis_url, auth_url, anon_ids_per_address=1)
    async with app_client(app, address="203.0.113.8") as visitor:
        mine = (await visitor.get("/who")).json()["user_id"]
        kept = dict(visitor.cookies)
        await cookieless(visitor)  # someone else there: the last mint, then the shared id
        assert (await cookieless(visitor)).json()["user_id"].startswith("anon-shared-")
        visitor.cookies.update(kept)
        assert (await visitor.get("/who")).json()["user_id"] == mine


async def test_ipv6_callers_are_grouped_by_their_64(app_client, redis_url, auth_url):
    app = probe_app(redis_url, auth_url, anon_ids_per_address=1)
    async with app_client(app, address="2001:db8:1:2::10") as first:
        assert (await first.get("/who")).json()["address"] == "2001:db8:1:2::/64"
    async with app_client(app, address="2001:db8:1:2:ffff::1") as rotated:
        response = await rotated.get("/who")
    assert response.json()["user_id"].startswith("anon-shared-")  # same /64: allowance spent


async def cookieless(client):
    """A request without the anonymous cookie, as a client dropping it every time."""
    client.cookies.clear()
    return await client.get("/who")


async def test_a_peer_call_counts_the_callers_address_which_a_client_cannot_forge(
    app_client, redis_url, auth_url
):
    app = probe_app(redis_url, auth_url)
    async with app_client(app, address="203.0.113.20") as client:
        mine = await client.get("/who")
    async with app_client(app, address="10.1.2.3") as peer:  # chat calling tts, say
        peer.cookies.update(client.cookies)
        signed = mine.json()["forward"]["X-Avatar-Client-Address"]
        on_behalf = await peer.get("/who", headers={"X-Avatar-Client-Address": signed})
        forged = signed.replace("203.0.113.20", "198.51.100.1")
        refused = await peer.get("/who", headers={"X-Avatar-Client-Address": forged})
        unsigned = await peer.get("/who", headers={"X-Avatar-Client-Address": "198.51.100.1"})
    assert on_behalf.json()["address"] == "203.0.113.20"
    assert on_behalf.json()["user_id"] == mine.json()["user_id"]
    assert refused.json()["address"] == unsigned.json()["address"] == "10.1.2.3"
