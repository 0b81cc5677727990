"""What one user may take: a write rate, a count and a byte quota; and what a listing costs
(a page of small records, never the raw cards)."""

import json

from tests.helpers import as_user

from .helpers import characters_app, original_seraphina, upload

ALICE, BOB = as_user("alice"), as_user("bob")
NEW = {"name": "나만의 캐릭터", "persona": "차분한 사서."}


def card_of(size: int) -> bytes:
    """A valid V2 card of about `size` bytes (the bulk in a field kept only in the card)."""
    card = original_seraphina()
    card["data"]["extensions"] = {"bulk": "가" * (size // 3)}
    return json.dumps(card, ensure_ascii=False).encode()


async def sent_by_redis(redis) -> int:
    return (await redis.info("stats"))["total_net_output_bytes"]


async def test_a_page_reads_a_page_not_every_card(app_client, redis_url, redis, presets_file):
    async with app_client(characters_app(redis_url, presets_file)) as characters:
        for _ in range(8):
            imported = await upload(characters, "big.json", card_of(900_000))
            assert imported.status_code == 201, imported.text
        for index in range(30):
            await characters.post(
                "/api/characters", json={**NEW, "name": f"#{index}"}, headers=ALICE
            )
        before = await sent_by_redis(redis)
        page = await characters.get("/api/characters?limit=1", headers=ALICE)
        read = await sent_by_redis(redis) - before
        last = await characters.get(f"/api/characters/{imported.json()['data']['id']}/export")
    assert [c["name"] for c in page.json()["data"]["characters"]] == ["#29"]
    assert read < 20_000  # of about 8 MB of cards and 38 records
    assert len(last.json()["data"]["extensions"]["bulk"]) == 900_000 // 3  # still exported


async def test_filtered_pages_go_through_every_character(app_client, redis_url, presets_file):
    app = characters_app(redis_url, presets_file, max_characters_per_user=1000)
    async with app_client(app) as characters:
        for index in range(300):  # more than the largest batch read from the owner set
            category = "짝수" if index % 2 == 0 else "홀수"
            body = {**NEW, "name": f"#{index}", "category": category}
            assert (await characters.post("/api/characters", json=body, headers=ALICE)).is_success
        names, cursor = [], ""
        while True:
            query = f"/api/characters?category=홀수&limit=40{cursor}"
            page = (await characters.get(query, headers=ALICE)).json()["data"]
            names += [c["name"] for c in page["characters"]]
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
    assert names == [f"#{index}" for index in range(299, 0, -2)]


async def test_a_user_keeps_at_most_their_count(app_client, redis_url, redis, presets_file):
    app = characters_app(redis_url, presets_file, max_characters_per_user=3)
    async with app_client(app) as characters:
        made = [await characters.post("/api/characters", json=NEW, headers=ALICE) for _ in range(3)]
        keys_before = sorted(await redis.keys("characters:*"))
        refused = await characters.post("/api/characters", json=NEW, headers=ALICE)
        refused_import = await upload(characters, "card.json", card_of(1000))
        keys_after = sorted(await redis.keys("characters:*"))
        others = await characters.post("/api/characters", json=NEW, headers=BOB)
        await characters.delete(f"/api/characters/{made[0].json()['data']['id']}", headers=ALICE)
        again = await characters.post("/api/characters", json=NEW, headers=ALICE)
    assert [r.status_code for r in (refused, refused_import)] == [409, 409]
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "3 characters" in refused.json()["error"]["message"]
    assert keys_after == keys_before  # nothing stored
    assert others.status_code == 201 and again.status_code == 201


async def test_a_user_keeps_at_most_their_bytes(app_client, redis_url, presets_file):
    app = characters_app(redis_url, presets_file, max_character_bytes_per_user=2_500_000)
    async with app_client(app) as characters:
        first = await upload(characters, "a.json", card_of(900_000))
        second = await upload(characters, "b.json", card_of(900_000))
        third = await upload(characters, "c.json", card_of(900_000))
        small = await characters.post("/api/characters", json=NEW, headers=ALICE)
        await characters.delete(f"/api/characters/{first.json()['data']['id']}", headers=ALICE)
        after_delete = await upload(characters, "c.json", card_of(900_000))
    assert [first.status_code, second.status_code, small.status_code] == [201, 201, 201]
    assert third.status_code == 409 and "2500000 bytes" in third.json()["error"]["message"]
    assert after_delete.status_code == 201  # the deleted card's bytes came back


async def test_writes_have_a_rate_per_user(app_client, redis_url, presets_file):
    app = characters_app(redis_url, presets_file, character_writes_per_min=3)
    async with app_client(app) as characters:
        made = [await characters.post("/api/characters", json=NEW, headers=ALICE) for _ in range(3)]
        refused = await characters.patch(
            f"/api/characters/{made[0].json()['data']['id']}", json={"name": "x"}, headers=ALICE
        )
        reads = await characters.get("/api/characters", headers=ALICE)
        others = await characters.post("/api/characters", json=NEW, headers=BOB)
    assert [r.status_code for r in made] == [201, 201, 201]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert reads.status_code == 200 and len(reads.json()["data"]["characters"]) == 3
    assert others.status_code == 201


async def test_a_full_redis_refuses_writes_and_keeps_what_it_has(
    app_client, redis_url, redis, presets_file
):
    async with app_client(characters_app(redis_url, presets_file)) as characters:
        kept = (await characters.post("/api/characters", json=NEW, headers=ALICE)).json()["data"]
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory-policy", "noeviction")  # as the stack runs it
        await redis.config_set("maxmemory", used)
        try:
            refused = await characters.post("/api/characters", json=NEW, headers=BOB)
            read = await characters.get(f"/api/characters/{kept['id']}")
        finally:
            await redis.config_set("maxmemory", 0)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_full"
    assert read.status_code == 200 and read.json()["data"] == kept
