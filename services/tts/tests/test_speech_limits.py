"""What the speech service keeps and refuses: the folder within its limits and fair across
callers, a rate per caller, a cap toward the engine, recovery after Redis lost its data, a
full disk, an engine that never answers."""

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import ANON_COOKIE, current_identity
from avatar_tts.app import create_app
from avatar_tts.settings import TtsSettings
from tests.helpers import (
    as_user,
    identity_from_test_header,
    returning_visitor,
    silent_server,
)

from .helpers import LONG, SHORT, stored


def speech_settings(redis_url: str, folder, upstream: str, **limits) -> TtsSettings:
    """The tts service over this Redis, storing in `folder`, speaking through `upstream`."""
    return TtsSettings(redis_url=redis_url, assets_dir=str(folder), tts_base_url=upstream, **limits)


async def test_least_recently_used_audio_goes_when_the_folder_is_full(
    app_client, redis_url, tmp_path, emulator, redis
):
    settings = speech_settings(
        redis_url,
        tmp_path,
        emulator[0],
        assets_max_bytes=400_000,  # room for two of these files, not three
    )
    texts = [f"{LONG} {n}번째" for n in range(3)]
    async with app_client(create_app(settings)) as tts:
        returning_visitor(tts)
        made = [(await tts.post("/api/tts", json={"text": t})).json()["data"] for t in texts]
        first_again = (await tts.post("/api/tts", json={"text": texts[0]})).json()["data"]
    assert all(140_000 < m["file_size"] < 200_000 for m in made)
    assert not stored(tmp_path, made[0]["audio_url"]).exists()  # the oldest went first
    assert stored(tmp_path, made[2]["audio_url"]).exists()
    assert first_again["cached"] is False  # evicted audio is made again
    assert int(await redis.get("tts:bytes")) <= 400_000


@pytest.mark.parametrize("stranger_has_a_cookie", [True, False])
async def test_one_callers_audio_does_not_push_out_anothers(
    app_client, redis_url, tmp_path, emulator, stranger_has_a_cookie
):
    settings = speech_settings(
        redis_url,
        tmp_path,
        emulator[0],
        assets_max_bytes=700_000,  # room for four of these files
    )
    async with (
        app_client(create_app(settings), address="10.0.0.9") as victim,
        app_client(create_app(settings), address="10.0.0.1") as flood,
    ):
        returning_visitor(victim)
        kept = (await victim.post("/api/tts", json={"text": f"{LONG} 내 것"})).json()["data"]
        flooded = []
        for n in range(8):
            if not stranger_has_a_cookie:
                flood.cookies.clear()  # a new anonymous id every time: counted by address
            made = await flood.post("/api/tts", json={"text": f"{LONG} {n}"})
            flooded.append(made.json()["data"])
    assert stored(tmp_path, kept["audio_url"]).exists()
    # The flood pushed out its own: its newest are kept, its older ones went.
    assert [stored(tmp_path, f["audio_url"]).exists() for f in flooded][-2:] == [True, True]
    assert not any(stored(tmp_path, f["audio_url"]).exists() for f in flooded[1:5])


async def test_a_caller_over_their_share_gives_back_their_own_oldest(
    app_client, redis_url, tmp_path, emulator
):
    settings = speech_settings(
        redis_url,
        tmp_path,
        emulator[0],
        assets_max_bytes_per_user=400_000,  # two of these files; the folder has room
    )
    async with app_client(create_app(settings)) as tts:
        returning_visitor(tts)
        made = [
            (await tts.post("/api/tts", json={"text": f"{LONG} {n}"})).json()["data"]
            for n in range(3)
        ]
    assert [stored(tmp_path, m["audio_url"]).exists() for m in made] == [False, True, True]


async def test_speech_has_a_rate_per_caller(app_client, redis_url, tmp_path, emulator):
    settings = speech_settings(redis_url, tmp_path, emulator[0], tts_rate_per_min=3)
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with app_client(app) as tts:
        alice = [
            await tts.post("/api/tts", json={"text": SHORT}, headers=as_user("alice"))
            for _ in range(4)
        ]
        bob = await tts.post("/api/tts", json={"text": SHORT}, headers=as_user("bob"))
    assert [r.status_code for r in alice] == [200, 200, 200, 429]
    assert alice[3].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(alice[3].headers["Retry-After"]) <= 60
    assert bob.status_code == 200


async def test_syntheses_beyond_the_cap_wait_briefly_then_get_busy(app_client, redis_url, tmp_path):
    config = gpt_sovits.GptSovitsConfig(latency_s=0.6)
    with serve_in_thread(gpt_sovits.create_app(config)) as sovits:
        for wait_s, expected in ((0.2, [200, 503]), (3.0, [200, 200])):
            settings = speech_settings(
                redis_url,
                tmp_path,
                sovits,
                tts_max_in_flight=1,
                tts_queue_wait_s=wait_s,
            )
            async with app_client(create_app(settings)) as tts:
                texts = [f"{SHORT} {wait_s} {n}" for n in range(2)]  # two different speeches
                responses = await asyncio.gather(
                    *(tts.post("/api/tts", json={"text": t}) for t in texts)
                )
            assert sorted(r.status_code for r in responses) == expected
            busy = [r for r in responses if r.status_code == 503]
            assert all(r.json()["error"]["code"] == "tts_busy" for r in busy)


async def test_one_callers_burst_does_not_starve_another_at_the_cap(
    app_client, redis_url, tmp_path, emulator
):
    settings = speech_settings(
        redis_url, tmp_path, emulator[0], tts_max_in_flight=1, tts_queue_wait_s=1.0
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with app_client(app) as tts:
        burst = [
            asyncio.create_task(
                tts.post("/api/tts", json={"text": f"{SHORT} {n}"}, headers=as_user("alice"))
            )
            for n in range(8)
        ]
        await asyncio.sleep(0.05)  # all of Alice's are waiting before Bob's one comes
        bob = await tts.post("/api/tts", json={"text": LONG}, headers=as_user("bob"))
        alice = await asyncio.gather(*burst)
    assert bob.status_code == 200, bob.text  # the next turn is Bob's, not Alice's second
    assert 503 in [r.status_code for r in alice]  # the burst was more than the wait allows


async def test_old_audio_expires(app_client, redis_url, tmp_path, emulator):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_age_s=0.5)
    async with app_client(create_app(settings)) as tts:
        old = (await tts.post("/api/tts", json={"text": SHORT})).json()["data"]
        await asyncio.sleep(0.7)
        await tts.post("/api/tts", json={"text": LONG})
    assert not stored(tmp_path, old["audio_url"]).exists()


async def test_old_audio_expires_when_no_new_audio_is_made(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_age_s=0.5)
    async with app_client(create_app(settings)) as tts:
        old = stored(tmp_path, (await speak(tts, SHORT))["audio_url"])
        for _ in range(100):  # the periodic sweep's turn, whenever it comes
            if not old.exists():
                break
            await asyncio.sleep(0.1)
        assert not old.exists()  # nobody made new audio: the sweep applied the age rule
    assert await redis.keys("tts:cache:*") == [] and await redis.zcard("tts:files") == 0


async def speak_as_one_visitor(app_client, settings: TtsSettings, texts: list[str]) -> list:
    """A start of the service, in which one returning visitor has `texts` spoken."""
    async with app_client(create_app(settings)) as tts:
        returning_visitor(tts)
        return [(await tts.post("/api/tts", json={"text": t})).json()["data"] for t in texts]


async def test_after_redis_lost_its_data_old_audio_is_still_kept_in_bounds(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0])
    old = await speak_as_one_visitor(app_client, settings, [f"{LONG} {n}" for n in range(2)])
    await redis.flushdb()  # Redis lost everything; the files are still on disk
    folder = stored(tmp_path, old[0]["audio_url"]).parent
    stale, fresh = folder / "dead.part", folder / "writing.part"
    stale.write_bytes(b"half"), fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    full = settings.model_copy(update={"assets_max_bytes": 400_000})  # two files, not three
    await speak_as_one_visitor(app_client, full, [f"{LONG} new"])  # the service starts again
    assert not stored(tmp_path, old[0]["audio_url"]).exists()  # the oldest went first
    assert stored(tmp_path, old[1]["audio_url"]).exists()
    assert not stale.exists() and fresh.exists()  # another replica may be writing that one


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system of its own (tmpfs; mounting needs root, as on the CI machines)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_full_disk_is_503_and_keeps_what_is_stored(
    app_client, redis_url, small_disk, emulator
):
    settings = speech_settings(redis_url, small_disk, emulator[0])
    async with app_client(create_app(settings)) as tts:
        returning_visitor(tts)
        kept = (await tts.post("/api/tts", json={"text": LONG})).json()["data"]
        before = stored(small_disk, kept["audio_url"]).read_bytes()
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (1024**2 - 300_000))  # room for one of these files, not two
        refused = [await tts.post("/api/tts", json={"text": f"{LONG} {n}"}) for n in range(2)]
        again = await tts.get(kept["audio_url"])
        filler.unlink()
        after = await tts.post("/api/tts", json={"text": f"{LONG} 다시"})
    assert refused[0].status_code == 200  # the last room there was
    assert refused[1].status_code == 503
    assert refused[1].json()["error"]["code"] == "storage_full"
    assert list(small_disk.rglob("*.part")) == []  # the half-written file was removed
    assert again.status_code == 200 and again.content == before
    assert after.status_code == 200  # room again: speech again


async def test_a_speech_server_that_never_answers_is_504_within_the_timeout(
    app_client, redis_url, tmp_path
):
    with silent_server() as hung:
        settings = speech_settings(redis_url, tmp_path, hung, tts_timeout_s=0.5)
        async with app_client(create_app(settings)) as tts:
            started = time.perf_counter()
            response = await tts.post("/api/tts", json={"text": SHORT})
            elapsed = time.perf_counter() - started
    assert (response.status_code, response.json()["error"]["code"]) == (504, "tts_timeout")
    assert elapsed < 3
    assert list(tmp_path.rglob("*.*")) == []  # nothing half-written left


async def test_an_index_of_an_older_version_is_rebuilt_at_start(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0])
    old = await speak_as_one_visitor(app_client, settings, [f"{LONG} {n}" for n in range(2)])
    # What the previous version kept: files, holders and a total counting every name (stale
    # here), and none of the index of inodes.
    await redis.delete("tts:link-of", "tts:inodes", *await redis.keys("tts:links:*"))
    await redis.hset(
        "tts:holder-of", mapping={str(stored(tmp_path, o["audio_url"])): "1 x" for o in old}
    )
    await redis.set("tts:bytes", 10_000_000)
    full = settings.model_copy(update={"assets_max_bytes": 400_000})  # two files, not three
    (new,) = await speak_as_one_visitor(app_client, full, [f"{LONG} new"])
    assert not stored(tmp_path, old[0]["audio_url"]).exists()  # the oldest went
    assert stored(tmp_path, old[1]["audio_url"]).exists()
    assert stored(tmp_path, new["audio_url"]).exists()  # not evicted by a stale total


# Texts of one length: their audio is of one size.
SAME_SIZE = [f"{LONG} {n}" for n in range(10)]


async def speak(client, text: str, headers: dict | None = None, **fields) -> dict:
    response = await client.post("/api/tts", json={"text": text, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def distinct_bytes(folder: Path) -> int:
    """The bytes the audio files under `folder` take on disk: each file (inode) once, however
    many names (hard links) it has."""
    inodes = {}
    for path in folder.rglob("*.wav"):
        inodes[path.stat().st_ino] = path.stat().st_size
    return sum(inodes.values())


async def test_cache_hits_of_two_ids_cannot_evict_anothers_audio(
    app_client, redis_url, tmp_path, emulator
):
    roomy = speech_settings(redis_url, tmp_path, emulator[0])
    async with (
        app_client(create_app(roomy), address="10.0.0.9") as victim,
        app_client(create_app(roomy), address="10.0.0.1") as first_id,
    ):
        returning_visitor(victim), returning_visitor(first_id)
        kept = [await speak(victim, text) for text in SAME_SIZE[:2]]
        theirs = await speak(first_id, SAME_SIZE[2])
    size = theirs["file_size"]
    # Three files are on disk; room for three and a half.
    tight = roomy.model_copy(update={"assets_max_bytes": int(3.5 * size)})
    async with app_client(create_app(tight), address="10.0.0.1") as second_id:
        returning_visitor(second_id)
        links = [
            await speak(second_id, SAME_SIZE[2], file_id=f"another-name-{n:04}") for n in range(3)
        ]
    assert all(stored(tmp_path, k["audio_url"]).exists() for k in kept)
    assert all(link["cached"] for link in links)  # names for the same audio, no new bytes
    assert distinct_bytes(tmp_path) == 3 * size <= tight.assets_max_bytes
    assert all(stored(tmp_path, link["audio_url"]).exists() for link in links)


async def test_many_ids_of_one_address_are_one_holder(app_client, redis_url, tmp_path, emulator):
    roomy = speech_settings(redis_url, tmp_path, emulator[0])
    async with app_client(create_app(roomy), address="10.0.0.9") as victim:
        returning_visitor(victim)
        kept = [await speak(victim, text) for text in SAME_SIZE[:2]]
    # Room for four and a half files; the address's ids make three.
    tight = roomy.model_copy(update={"assets_max_bytes": int(4.5 * kept[0]["file_size"])})
    flood = []
    for text in SAME_SIZE[2:5]:
        async with app_client(create_app(tight), address="10.0.0.1") as fresh_id:
            returning_visitor(fresh_id)
            flood.append(await speak(fresh_id, text))
    assert all(stored(tmp_path, k["audio_url"]).exists() for k in kept)
    # The address holds the most: its own oldest went.
    assert [stored(tmp_path, f["audio_url"]).exists() for f in flood] == [False, True, True]


async def test_bytes_are_counted_once_per_audio_and_links_cost_no_share(
    app_client, redis_url, redis, tmp_path, emulator
):
    roomy = speech_settings(redis_url, tmp_path, emulator[0])
    async with app_client(create_app(roomy), address="10.0.0.9") as other:
        returning_visitor(other)
        popular = await speak(other, SAME_SIZE[0])
    # One file of the caller's own and a half: the names below are no files of theirs.
    tight = roomy.model_copy(update={"assets_max_bytes_per_user": int(1.5 * popular["file_size"])})
    async with app_client(create_app(tight), address="10.0.0.1") as caller:
        returning_visitor(caller)
        own = await speak(caller, SAME_SIZE[1])
        links = [
            await speak(caller, SAME_SIZE[0], file_id=f"a-name-of-mine-{n:04}") for n in range(3)
        ]
    everything = [popular, own, *links]
    assert all(stored(tmp_path, f["audio_url"]).exists() for f in everything)
    assert int(await redis.get("tts:bytes")) == distinct_bytes(tmp_path) == 2 * own["file_size"]


async def test_a_caller_holds_a_bounded_number_of_files(app_client, redis_url, tmp_path, emulator):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_files_per_user=3)
    async with (
        app_client(create_app(settings), address="10.0.0.9") as other,
        app_client(create_app(settings), address="10.0.0.1") as tts,
    ):
        returning_visitor(other), returning_visitor(tts)
        await speak(other, SHORT)
        names = [await speak(tts, SHORT, file_id=f"one-more-name-{n:04}") for n in range(4)]
    # Names cost no bytes, but each is a file and an index entry: the oldest went.
    assert [stored(tmp_path, n["audio_url"]).exists() for n in names] == [False, True, True, True]


async def test_a_full_audio_index_refuses_new_audio_and_keeps_serving(
    app_client, redis_url, tmp_path, emulator
):
    roomy = speech_settings(redis_url, tmp_path, emulator[0])
    async with app_client(create_app(roomy), address="10.0.0.1") as tts:
        returning_visitor(tts)
        cookie = tts.cookies[ANON_COOKIE]
        kept = await speak(tts, SHORT)
    # A Redis so small that the audio index's share has no room for one more file.
    tiny = roomy.model_copy(update={"redis_maxmemory": "32kb"})
    async with app_client(create_app(tiny), address="10.0.0.1") as tts:
        tts.cookies.set(ANON_COOKIE, cookie)  # the same visitor
        refused = await tts.post("/api/tts", json={"text": LONG})
        again = await tts.post("/api/tts", json={"text": SHORT})
        download = await tts.get(kept["audio_url"])
    async with app_client(create_app(tiny), address="10.0.0.2") as other:
        returning_visitor(other)
        link = await other.post("/api/tts", json={"text": SHORT})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "storage_full")
    assert (link.status_code, link.json()["error"]["code"]) == (503, "storage_full")
    assert again.status_code == 200 and again.json()["data"]["file_id"] == kept["file_id"]
    assert download.status_code == 200
    assert [p.name for p in tmp_path.rglob("*.*")] == [Path(kept["audio_url"]).name]


async def test_a_full_audio_index_makes_room_from_the_holder_of_the_most_files(
    app_client, redis_url, tmp_path, emulator
):
    # The audio index's share (3%) has room for the entries of three files (3 KB each).
    settings = speech_settings(redis_url, tmp_path, emulator[0], redis_maxmemory="342kb")
    async with (
        app_client(create_app(settings), address="10.0.0.9") as victim,
        app_client(create_app(settings), address="10.0.0.1") as flood,
    ):
        returning_visitor(victim), returning_visitor(flood)
        first = await speak(victim, SHORT)
        flooded = [await speak(flood, f"{SHORT} {n}") for n in range(3)]
        second = await speak(victim, LONG)
    assert stored(tmp_path, first["audio_url"]).exists()
    assert stored(tmp_path, second["audio_url"]).exists()
    assert [stored(tmp_path, f["audio_url"]).exists() for f in flooded] == [False, False, True]


async def test_anonymous_ids_of_one_address_share_a_speech_rate(
    app_client, redis_url, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0], tts_rate_per_min_per_address=3)
    app = create_app(settings)
    async with (
        app_client(app, address="10.0.0.1") as first_id,
        app_client(app, address="10.0.0.1") as second_id,
        app_client(app, address="10.0.0.2") as elsewhere,
    ):
        returning_visitor(first_id), returning_visitor(second_id), returning_visitor(elsewhere)
        answers = [
            await c.post("/api/tts", json={"text": SHORT}) for c in (first_id, second_id) * 2
        ]
        other = await elsewhere.post("/api/tts", json={"text": SHORT})
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["error"]["code"] == "rate_limited"
    assert other.status_code == 200


async def test_signed_in_users_of_one_address_are_not_counted_together(
    app_client, redis_url, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0], tts_rate_per_min_per_address=3)
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with app_client(app) as tts:
        answers = [
            await tts.post("/api/tts", json={"text": SHORT}, headers=as_user(name))
            for name in ("alice", "bob") * 2
        ]
    assert [a.status_code for a in answers] == [200] * 4


async def test_audio_whose_makers_file_went_stays_and_is_counted_for_its_keeper(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_files_per_user=1)
    async with (
        app_client(create_app(settings), address="10.0.0.1") as maker,
        app_client(create_app(settings), address="10.0.0.9") as keeper,
    ):
        returning_visitor(maker), returning_visitor(keeper)
        made = await speak(maker, SAME_SIZE[0])
        kept = await speak(keeper, SAME_SIZE[0])  # a name of the same audio
        newer = await speak(maker, SAME_SIZE[1])  # the maker's one file now: the first went
        download = await keeper.get(kept["audio_url"])
    assert not stored(tmp_path, made["audio_url"]).exists()
    assert download.status_code == 200 and len(download.content) == made["file_size"]
    assert int(await redis.get("tts:bytes")) == distinct_bytes(tmp_path) == 2 * newer["file_size"]
    assert await redis.zscore("tts:usage", "addr:10.0.0.9") == made["file_size"]


async def entries_of(redis) -> tuple[list[str], dict[str, str]]:
    """The speech cache's Redis entries: the paths its cache entries name, and each user
    entry's `{user}:{file_id}`."""
    cache = [await redis.hget(k, "path") async for k in redis.scan_iter("tts:cache:*")]
    users = {}
    async for k in redis.scan_iter("tts:user:*"):
        users[k] = f"{k.split(':')[2]}:{await redis.get(k)}"
    return cache, users


def on_disk(tmp_path: Path) -> set[str]:
    return {f"{p.parent.parent.name}:{p.stem}" for p in tmp_path.glob("*/audio/*.*")}


async def test_evicted_audio_takes_its_cache_and_user_entries_along(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_files_per_user=2)
    made = await speak_as_one_visitor(app_client, settings, [f"{SHORT} {n}" for n in range(6)])
    cache, users = await entries_of(redis)
    assert len(on_disk(tmp_path)) == 2
    # Entries of only the two files kept: Redis does not grow with the audio evicted.
    assert sorted(cache) == sorted(str(stored(tmp_path, m["audio_url"])) for m in made[-2:])
    assert sorted(users.values()) == sorted(on_disk(tmp_path))


async def test_a_cache_entry_moves_to_a_name_its_audio_still_has(
    app_client, redis_url, redis, tmp_path, emulator
):
    app = create_app(speech_settings(redis_url, tmp_path, emulator[0], assets_max_files_per_user=1))
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with app_client(app) as tts:
        alices = await speak(tts, SHORT, headers=as_user("alice"))  # made
        bobs = await speak(tts, SHORT, headers=as_user("bob"))  # a name (hard link) of it
        await speak(tts, LONG, headers=as_user("alice"))  # Alice's one file: hers went
        assert not stored(tmp_path, alices["audio_url"]).exists()
        cache, users = await entries_of(redis)
        assert str(stored(tmp_path, bobs["audio_url"])) in cache  # the audio is still there
        assert sorted(users.values()) == sorted(on_disk(tmp_path))
        carols = await speak(tts, SHORT, headers=as_user("carol"))
        assert carols["cached"] is True  # a hit: Bob's name of the audio serves as the cache's
        for user in ("bob", "carol"):  # the last names of the audio go
            await speak(tts, LONG, headers=as_user(user))
    cache, users = await entries_of(redis)
    assert len(on_disk(tmp_path)) == 3 and len(cache) == 1  # LONG's only
    assert sorted(users.values()) == sorted(on_disk(tmp_path))
    assert len([r for r in emulator[1].recorder.requests if r.status == 200]) == 2


async def test_a_users_folder_goes_with_their_last_file(app_client, redis_url, tmp_path, emulator):
    settings = speech_settings(redis_url, tmp_path, emulator[0], assets_max_files_per_user=1)
    for n in range(3):
        async with app_client(create_app(settings)) as tts:
            returning_visitor(tts)  # a new id each time, of one address: the same holder
            last = await speak(tts, f"{SHORT} {n}")
    # The ids before lost their one file to the last one's: no folders of theirs are left.
    assert list(tmp_path.iterdir()) == [stored(tmp_path, last["audio_url"]).parent.parent]


async def test_a_folder_removed_as_it_is_made_is_made_again(
    app_client, redis_url, tmp_path, emulator, monkeypatch
):
    make_folder, removed = Path.mkdir, set()

    def removed_at_once(folder: Path, *args, **kwargs) -> None:
        # The race window: another request's eviction removes the folder, empty, just after
        # this request made it and before it writes there (once per folder).
        make_folder(folder, *args, **kwargs)
        if folder.name == "audio" and folder not in removed:
            removed.add(folder)
            folder.rmdir(), folder.parent.rmdir()

    monkeypatch.setattr(Path, "mkdir", removed_at_once)
    app = create_app(speech_settings(redis_url, tmp_path, emulator[0]))
    app.dependency_overrides[current_identity] = identity_from_test_header
    async with app_client(app) as tts:
        made = await speak(tts, SHORT, headers=as_user("alice"))  # a new file
        linked = await speak(tts, SHORT, headers=as_user("bob"))  # a new name of it
    assert linked["cached"] is True
    assert stored(tmp_path, made["audio_url"]).exists()
    assert stored(tmp_path, linked["audio_url"]).exists()
    assert len([r for r in emulator[1].recorder.requests if r.status == 200]) == 1
