"""POST /api/tts and the audio file route, against the GPT-SoVITS emulator over real HTTP,
a real Redis and a real assets folder."""

import asyncio
import io
import os
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import mutagen
import pytest

from avatar_devstack.ports import free_port
from avatar_devstack.testing import (
    as_user,
    identity_from_test_header,
    logged,
    returning_visitor,
    silent_server,
)
from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import current_identity
from avatar_tts.app import create_app
from avatar_tts.settings import TtsSettings

SHORT, LONG = "안녕하세요.", "안녕하세요. 오늘은 날씨가 정말 좋네요. 같이 산책하러 갈까요?"


@pytest.fixture
def emulator() -> Iterator[tuple[str, gpt_sovits.GptSovitsConfig]]:
    config = gpt_sovits.GptSovitsConfig(latency_s=0.2, languages=("ko", "en", "auto"))
    with serve_in_thread(gpt_sovits.create_app(config)) as url:
        yield url, config


def make_app(redis_url: str, assets: Path, tts_base_url: str):
    app = create_app(
        TtsSettings(redis_url=redis_url, assets_dir=str(assets), tts_base_url=tts_base_url)
    )

    app.dependency_overrides[current_identity] = identity_from_test_header
    return app


@pytest.fixture
async def tts(app_client, redis_url, tmp_path, emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_app(redis_url, tmp_path, emulator[0])) as client:
        yield client


def synth_count(emulator) -> int:
    return len([r for r in emulator[1].recorder.requests if r.status == 200])


def stored(tmp_path: Path, audio_url: str) -> Path:
    return tmp_path / audio_url.removeprefix("/mnt/user_assets/")


async def test_speech_is_stored_as_valid_audio(tts, tmp_path):
    short = (await tts.post("/api/tts", json={"text": SHORT})).json()["data"]
    long = (await tts.post("/api/tts", json={"text": LONG})).json()["data"]
    assert short["audio_url"].startswith("/mnt/user_assets/anonymous/audio/")
    assert short["format"] == "wav" and short["voice_id"] == "default"
    assert short["cached"] is False and short["created_at"].endswith("Z")
    path = stored(tmp_path, short["audio_url"])
    with wave.open(str(path)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (32000, 1, 2)
    assert short["file_size"] == path.stat().st_size
    assert 0 < short["duration"] < long["duration"]
    assert mutagen.File(stored(tmp_path, long["audio_url"])).info.length == pytest.approx(
        long["duration"], abs=0.01
    )


@pytest.mark.parametrize(
    ("media_type", "streaming_mode"), [("ogg", 0), ("aac", 0), ("wav", 1), ("raw", 0)]
)
async def test_other_formats_and_streamed_wav_have_a_duration(tts, media_type, streaming_mode):
    body = {"text": LONG, "media_type": media_type, "streaming_mode": streaming_mode}
    data = (await tts.post("/api/tts", json=body)).json()["data"]
    assert data["format"] == media_type and data["audio_url"].endswith(f".{media_type}")
    assert data["duration"] > 1


async def test_a_repeat_is_a_cache_hit(tts, emulator):
    first = (await tts.post("/api/tts", json={"text": SHORT})).json()["data"]
    again = (await tts.post("/api/tts", json={"text": f"  {SHORT}  "})).json()["data"]
    assert synth_count(emulator) == 1
    assert again["cached"] is True and again["file_id"] == first["file_id"]
    other_voice = (await tts.post("/api/tts", json={"text": SHORT, "voice_id": "luna"})).json()
    assert other_voice["data"]["cached"] is False and synth_count(emulator) == 2


async def test_another_user_gets_the_cached_audio_under_their_own_path(tts, tmp_path, emulator):
    alice = await tts.post("/api/tts", json={"text": SHORT}, headers={"X-Test-User": "alice"})
    bob = await tts.post("/api/tts", json={"text": SHORT}, headers={"X-Test-User": "bob"})
    a, b = alice.json()["data"], bob.json()["data"]
    assert b["cached"] is True and synth_count(emulator) == 1
    assert (
        b["audio_url"].startswith("/mnt/user_assets/bob/audio/") and "alice" not in b["audio_url"]
    )
    assert (
        stored(tmp_path, a["audio_url"]).read_bytes()
        == stored(tmp_path, b["audio_url"]).read_bytes()
    )


async def test_identical_requests_at_once_synthesize_once(tts, emulator):
    responses = await asyncio.gather(
        *(tts.post("/api/tts", json={"text": LONG}) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    assert synth_count(emulator) == 1
    assert sum(not r.json()["data"]["cached"] for r in responses) == 1


async def test_return_binary_answers_the_audio_itself(tts):
    response = await tts.post("/api/tts", json={"text": SHORT, "return_binary": True})
    assert response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as audio:
        assert audio.getnframes() > 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "   "}, 422, "validation_error"),
        ({"text": "가" * 1001}, 422, "validation_error"),
        ({"text": SHORT, "text_lang": "xx"}, 422, "validation_error"),
        ({"text": SHORT, "prompt_lang": "kr"}, 422, "validation_error"),
        ({"text": SHORT, "media_type": "mp3"}, 422, "validation_error"),
        ({"text": SHORT, "streaming_mode": 4}, 422, "validation_error"),
        ({"text": SHORT, "voice": "x"}, 422, "validation_error"),
        ({"text": SHORT, "voice_id": "nobody"}, 404, "voice_not_found"),
        ({"text": SHORT, "text_lang": "ja"}, 422, "tts_rejected"),  # the server's own 400
    ],
)
async def test_bad_requests_store_nothing(tts, tmp_path, redis, body, status, code):
    response = await tts.post("/api/tts", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert list(tmp_path.rglob("*.*")) == []
    assert await redis.keys("tts:*") == []


async def test_speech_server_failures(app_client, redis_url, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    async with app_client(make_app(redis_url, tmp_path, dead)) as tts:
        refused = await tts.post("/api/tts", json={"text": SHORT})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "tts_unavailable")
    config = gpt_sovits.GptSovitsConfig(fail_status=500)
    with serve_in_thread(gpt_sovits.create_app(config)) as url:
        async with app_client(make_app(redis_url, tmp_path, url)) as tts:
            failed = await tts.post("/api/tts", json={"text": SHORT})
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "tts_error")
    assert list(tmp_path.rglob("*.*")) == []


async def test_the_speech_servers_own_texts_stay_in_the_log(tts):
    # GPT-SoVITS's 400 texts name its checks (and, for other errors, its internals).
    with logged("avatar") as records:
        refused = await tts.post("/api/tts", json={"text": SHORT, "text_lang": "ja"})
    error = refused.json()["error"]
    assert error["code"] == "tts_rejected" and "text_lang" in error["message"]
    assert "not supported" not in error["message"]
    assert any("not supported" in r.getMessage() for r in records)


async def test_stored_audio_is_served_with_ranges(tts):
    data = (await tts.post("/api/tts", json={"text": LONG})).json()["data"]
    whole = await tts.get(data["audio_url"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert "immutable" in whole.headers["cache-control"] and whole.headers["etag"]
    assert len(whole.content) == data["file_size"]
    part = await tts.get(data["audio_url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]


@pytest.mark.parametrize(
    "path",
    [
        "/mnt/user_assets/anonymous/audio/../audio/x.wav",
        "/mnt/user_assets/anonymous/audio/%2e%2e%2f%2e%2e%2fsecret.wav",
        "/mnt/user_assets/%2Fetc/audio/passwd.wav",
        "/mnt/user_assets/anonymous/audio/doesnotexist1234.wav",
        "/mnt/user_assets/anonymous/audio/x.py",
    ],
)
async def test_anything_but_a_stored_file_is_404(tts, path):
    response = await tts.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_streamed_binary_arrives_before_synthesis_ends_and_is_kept(redis_url, tmp_path):
    config = gpt_sovits.GptSovitsConfig(chunk_delay_s=0.15)
    with serve_in_thread(gpt_sovits.create_app(config)) as sovits:
        app = make_app(redis_url, tmp_path, sovits)
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as tts:
                body = {"text": LONG, "return_binary": True, "streaming_mode": 1}
                arrivals, audio = [], b""
                started = asyncio.get_running_loop().time()
                async with tts.stream("POST", "/api/tts", json=body) as response:
                    assert response.headers["content-type"] == "audio/wav"
                    async for chunk in response.aiter_bytes():
                        arrivals.append(asyncio.get_running_loop().time() - started)
                        audio += chunk
                again = (await tts.post("/api/tts", json={**body, "return_binary": False})).json()
    assert audio[:4] == b"RIFF" and len(arrivals) > 2
    assert arrivals[0] < arrivals[-1] / 2  # the first bytes long before the last
    assert again["data"]["cached"] is True
    assert len([r for r in config.recorder.requests if r.status == 200]) == 1


async def test_least_recently_used_audio_goes_when_the_folder_is_full(
    app_client, redis_url, tmp_path, emulator, redis
):
    settings = TtsSettings(
        redis_url=redis_url,
        assets_dir=str(tmp_path),
        tts_base_url=emulator[0],
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
    settings = TtsSettings(
        redis_url=redis_url,
        assets_dir=str(tmp_path),
        tts_base_url=emulator[0],
        assets_max_bytes=700_000,  # room for four of these files
    )
    async with (
        app_client(create_app(settings)) as victim,
        app_client(create_app(settings)) as flood,
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
    settings = TtsSettings(
        redis_url=redis_url,
        assets_dir=str(tmp_path),
        tts_base_url=emulator[0],
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
    settings = TtsSettings(
        redis_url=redis_url,
        assets_dir=str(tmp_path),
        tts_base_url=emulator[0],
        tts_rate_per_min=3,
    )
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
            settings = TtsSettings(
                redis_url=redis_url,
                assets_dir=str(tmp_path),
                tts_base_url=sovits,
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


async def test_old_audio_expires(app_client, redis_url, tmp_path, emulator):
    settings = TtsSettings(
        redis_url=redis_url,
        assets_dir=str(tmp_path),
        tts_base_url=emulator[0],
        assets_max_age_s=0.5,
    )
    async with app_client(create_app(settings)) as tts:
        old = (await tts.post("/api/tts", json={"text": SHORT})).json()["data"]
        await asyncio.sleep(0.7)
        await tts.post("/api/tts", json={"text": LONG})
    assert not stored(tmp_path, old["audio_url"]).exists()


async def test_a_chosen_file_id_is_never_reused(tts, tmp_path, emulator):
    file_id = "chosen-id-0123456789"
    first = (await tts.post("/api/tts", json={"text": SHORT, "file_id": file_id})).json()
    before = stored(tmp_path, first["data"]["audio_url"]).read_bytes()
    made = synth_count(emulator)
    again = await tts.post("/api/tts", json={"text": LONG, "file_id": file_id})
    assert again.status_code == 409 and again.json()["error"]["code"] == "file_id_taken"
    assert stored(tmp_path, first["data"]["audio_url"]).read_bytes() == before
    assert synth_count(emulator) == made  # refused before any synthesis


async def test_cache_and_user_entries_expire_with_their_files(tts, redis):
    await tts.post("/api/tts", json={"text": SHORT})
    keys = await redis.keys("tts:cache:*") + await redis.keys("tts:user:*")
    assert len(keys) == 2
    max_age = int(TtsSettings.model_fields["assets_max_age_s"].default)
    for key in keys:
        assert 0 < await redis.ttl(key) <= max_age  # no entry outlives the audio it names


async def test_after_redis_lost_its_data_old_audio_is_still_kept_in_bounds(
    app_client, redis_url, redis, tmp_path, emulator
):
    settings = TtsSettings(redis_url=redis_url, assets_dir=str(tmp_path), tts_base_url=emulator[0])
    async with app_client(create_app(settings)) as tts:
        returning_visitor(tts)
        old = [
            (await tts.post("/api/tts", json={"text": f"{LONG} {n}"})).json()["data"]
            for n in range(2)
        ]
    await redis.flushdb()  # Redis lost everything; the files are still on disk
    folder = stored(tmp_path, old[0]["audio_url"]).parent
    stale, fresh = folder / "dead.part", folder / "writing.part"
    stale.write_bytes(b"half"), fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    full = settings.model_copy(update={"assets_max_bytes": 400_000})  # two files, not three
    async with app_client(create_app(full)) as tts:  # the service starts again
        returning_visitor(tts)
        await tts.post("/api/tts", json={"text": f"{LONG} new"})
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
    settings = TtsSettings(
        redis_url=redis_url, assets_dir=str(small_disk), tts_base_url=emulator[0]
    )
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
        settings = TtsSettings(
            redis_url=redis_url, assets_dir=str(tmp_path), tts_base_url=hung, tts_timeout_s=0.5
        )
        async with app_client(create_app(settings)) as tts:
            started = time.perf_counter()
            response = await tts.post("/api/tts", json={"text": SHORT})
            elapsed = time.perf_counter() - started
    assert (response.status_code, response.json()["error"]["code"]) == (504, "tts_timeout")
    assert elapsed < 3
    assert list(tmp_path.rglob("*.*")) == []  # nothing half-written left
