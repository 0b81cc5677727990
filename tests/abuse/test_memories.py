"""Long-term memories against a hostile client (issue 28): anonymous ids cost one request, so
the memories they keep are counted per client address too; writes are rated per caller; and
another caller's memory is not found, whatever its id. Addresses 127.0.70-79.x are this
module's."""

from tests.helpers import client_from

ADDRESS_BYTES = 1024 * 1024  # MAX_MEMORY_BYTES_PER_ADDRESS
WRITES_PER_MIN = 60  # MEMORY_WRITES_PER_MIN
LONG = "기" * 495  # with its number, about MEMORY_MAX_CHARS (500) of Hangul: 1,500 bytes


async def remember(client, text: str):
    return await client.post("/api/memories", json={"character_id": "hermione", "text": text})


async def test_many_anonymous_ids_of_one_address_share_its_bytes(abuse_stack):
    statuses, refusal = [], None
    async with client_from(abuse_stack.gateway_url, "127.0.70.1") as attacker:
        while refusal is None and len(statuses) < 1000:
            if len(statuses) % 50 == 0:
                attacker.cookies.clear()  # a fresh anonymous id, with a rate of its own
            answer = await remember(attacker, f"{len(statuses)} {LONG}")
            statuses.append(answer.status_code)
            if answer.status_code != 201:
                refusal = answer.json()["error"]
    async with client_from(abuse_stack.gateway_url, "127.0.70.2") as neighbour:
        theirs = await remember(neighbour, LONG)
    # About 1,800 bytes a memory as stored: the address's MiB holds some 600, before its
    # count (1,000) would stop them.
    assert ADDRESS_BYTES // 2000 < statuses.count(201) < ADDRESS_BYTES // 1500
    assert refusal is not None and refusal["code"] == "quota_exceeded", refusal
    assert f"{ADDRESS_BYTES} bytes of memories together" in refusal["message"]
    assert theirs.status_code == 201, theirs.text  # another address still may


async def test_one_caller_writes_at_most_its_rate(abuse_stack):
    async with client_from(abuse_stack.gateway_url, "127.0.71.1") as attacker:
        await attacker.get("/api/memories")  # an anonymous id of its own: its writes its own
        statuses = [(await remember(attacker, f"사실 {n}")).status_code for n in range(65)]
        listed = await attacker.get("/api/memories", params={"limit": 200})
    assert statuses == [201] * WRITES_PER_MIN + [429] * 5
    assert len(listed.json()["data"]["memories"]) == WRITES_PER_MIN


async def test_another_callers_memory_is_not_found_and_stays(abuse_stack):
    url = abuse_stack.gateway_url
    async with client_from(url, "127.0.72.1") as victim, client_from(url, "127.0.72.2") as attacker:
        made = await remember(victim, "The user's bank PIN hint is their cat's name")
        memory_id = made.json()["data"]["id"]
        tries = [
            await attacker.get(f"/api/memories/{memory_id}"),
            await attacker.patch(f"/api/memories/{memory_id}", json={"text": "changed"}),
            await attacker.delete(f"/api/memories/{memory_id}"),
        ]
        theirs = await attacker.get("/api/memories")
        kept = await victim.get(f"/api/memories/{memory_id}")
    assert [t.status_code for t in tries] == [404] * 3
    assert all(t.json()["error"]["code"] == "memory_not_found" for t in tries)
    assert theirs.json()["data"]["memories"] == []
    assert kept.json()["data"]["text"] == "The user's bank PIN hint is their cat's name"
