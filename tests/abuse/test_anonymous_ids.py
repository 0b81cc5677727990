"""Anonymous ids cost one request each: an address gets ANON_IDS_PER_ADDRESS an hour (60 by
default), then its cookie-less callers read as one shared id and may not write."""

from tests.helpers import client_from

DEFAULT_MINTS = 60


async def test_dropping_the_cookie_stops_buying_ids_past_the_address_allowance(abuse_stack):
    async def visit(client):
        client.cookies.clear()
        response = await client.get("/api/characters")
        assert response.status_code == 200, response.text
        return response.headers.get("set-cookie", "")

    async with client_from(abuse_stack.gateway_url, "127.0.20.1") as attacker:
        minted = [await visit(attacker) for _ in range(DEFAULT_MINTS + 5)]
    async with client_from(abuse_stack.gateway_url, "127.0.20.2") as neighbour:
        theirs = await visit(neighbour)
    assert all("anon_id=" in cookie for cookie in minted[:DEFAULT_MINTS])
    assert not any("anon_id=" in cookie for cookie in minted[DEFAULT_MINTS:])
    assert "anon_id=" in theirs  # another address still gets an id of its own


async def test_past_the_allowance_the_address_reads_as_one_identity_and_writes_nothing(
    abuse_stack,
):
    async with client_from(abuse_stack.gateway_url, "127.0.20.3") as attacker:
        for _ in range(DEFAULT_MINTS):
            attacker.cookies.clear()
            await attacker.get("/api/characters")
        attacker.cookies.clear()
        read = await attacker.get("/api/characters/presets")
        made = await attacker.post("/api/characters", json={"name": "Shared", "persona": "p"})
        chat = await attacker.post(
            "/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "persona": "p"}
        )
    assert read.status_code == 200  # reading goes on
    for refused in (made, chat):  # what it stored, every neighbour there could change
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) > 0
