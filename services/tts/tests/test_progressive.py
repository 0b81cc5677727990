"""`progressive` speech: the answer as soon as GPT-SoVITS's stream has begun, and its
audio_url served as the file grows, over real HTTP (the tts app and the GPT-SoVITS emulator
each on a port of their own), a real Redis and a real assets folder."""

import asyncio
import io
import os
import struct
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest

from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread
from tests.helpers import as_user

from .helpers import LONG, SHORT, make_app, stored

# About 12 s of audio: 48 pieces of 0.25 s, one every CHUNK_DELAY_S.
SLOW_TEXT = "가나다라마바사아자차카타파하. " * 13
CHUNK_DELAY_S = 0.05
PROGRESSIVE = {"text": SLOW_TEXT, "streaming_mode": 2, "progressive": True}


@contextmanager
def tts_server(
    redis_url: str, assets: Path, settings: dict[str, float] | None = None, **emulator: float | int
) -> Iterator[tuple[str, gpt_sovits.GptSovitsConfig]]:
    """The tts app (with `settings`) and the GPT-SoVITS emulator (with `emulator`'s); the tts
    app is shut down (its lifespan ended) when the block exits."""
    config = gpt_sovits.GptSovitsConfig(**emulator)  # type: ignore[arg-type]
    with (
        serve_in_thread(gpt_sovits.create_app(config)) as sovits,
        serve_in_thread(
            make_app(redis_url, assets, sovits, **(settings or {})), lifespan="on"
        ) as url,
    ):
        yield url, config


@asynccontextmanager
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        yield http


def made(config: gpt_sovits.GptSovitsConfig) -> int:
    return len([r for r in config.recorder.requests if r.status == 200])


def pcm_of(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes)) as audio:
        return audio.readframes(audio.getnframes())


async def test_the_answer_comes_once_the_stream_has_begun_and_its_url_plays_it(redis_url, tmp_path):
    with tts_server(redis_url, tmp_path, chunk_delay_s=CHUNK_DELAY_S) as (url, config):
        async with client(url) as tts:
            answer = await tts.post("/api/tts", json=PROGRESSIVE)
            data = answer.json()["data"]
            assert answer.status_code == 200 and data["complete"] is False
            assert (data["duration"], data["file_size"], data["cached"]) == (0.0, 0, False)
            final = stored(tmp_path, data["audio_url"])
            streamed = b""
            async with tts.stream("GET", data["audio_url"]) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "audio/wav"
                assert response.headers["cache-control"] == "no-store"  # not the whole file
                async for chunk in response.aiter_bytes():
                    if not streamed:
                        assert not final.exists()  # readable while it is still being made
                    streamed += chunk
            # Only its owner reads it, whole or not.
            other = await tts.get(data["audio_url"], headers=as_user("bob"))
            assert other.status_code == 404
            whole = await tts.get(data["audio_url"])
            again = (await tts.post("/api/tts", json={**PROGRESSIVE, "progressive": False})).json()
    # While it was made, the header claimed an open-ended length; the file has the real one.
    assert streamed[:4] == b"RIFF" and streamed[36:40] == b"data"
    assert struct.unpack_from("<I", streamed, 40)[0] == 0xFFFFFFFF
    assert whole.headers["cache-control"].endswith("immutable")
    assert whole.content == final.read_bytes() and streamed[44:] == whole.content[44:]
    assert len(pcm_of(whole.content)) == len(streamed) - 44
    # The finished file is cached with its real facts: a repeat is a hit on the same file.
    assert again["data"]["cached"] is True and again["data"]["complete"] is True
    assert again["data"]["file_id"] == data["file_id"]
    assert again["data"]["file_size"] == final.stat().st_size
    assert again["data"]["duration"] == pytest.approx(len(streamed[44:]) / 64_000, abs=0.01)
    assert made(config) == 1
    assert list(tmp_path.rglob("*.part")) == []


async def test_readers_at_once_each_get_the_whole_audio(redis, redis_url, tmp_path):
    with tts_server(redis_url, tmp_path, chunk_delay_s=CHUNK_DELAY_S) as (url, _):
        async with client(url) as tts:
            data = (await tts.post("/api/tts", json=PROGRESSIVE)).json()["data"]
            reads = await asyncio.gather(*(tts.get(data["audio_url"]) for _ in range(3)))
            whole = (await tts.get(data["audio_url"])).content
    assert data["complete"] is False
    assert {r.headers["cache-control"] for r in reads} == {"no-store"}  # read as it was made
    assert {r.content[44:] for r in reads} == {whole[44:]}
    assert len(whole) > 44


async def test_a_stream_broken_off_midway_leaves_no_audio_and_no_cache(redis_url, tmp_path, redis):
    emulator = {"chunk_delay_s": 0.2, "fail_after_chunks": 3}
    with tts_server(redis_url, tmp_path, **emulator) as (url, config):
        async with client(url) as tts:
            data = (await tts.post("/api/tts", json=PROGRESSIVE)).json()["data"]
            with pytest.raises(httpx.RemoteProtocolError):  # the reader sees it incomplete
                async with tts.stream("GET", data["audio_url"]) as response:
                    async for _ in response.aiter_bytes():
                        pass
            gone = await tts.get(data["audio_url"])
            config.fail_after_chunks = None
            again = (await tts.post("/api/tts", json=PROGRESSIVE)).json()["data"]
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert again["cached"] is False and again["file_id"] != data["file_id"]  # made anew
    assert not stored(tmp_path, data["audio_url"]).exists()
    assert made(config) == 2


async def test_a_stream_that_fails_before_its_first_audio_is_a_clear_error(
    redis_url, tmp_path, redis
):
    with tts_server(redis_url, tmp_path, fail_after_chunks=0) as (url, _):
        async with client(url) as tts:
            failed = await tts.post("/api/tts", json=PROGRESSIVE)
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "tts_error")
    assert list(tmp_path.rglob("*.*")) == []
    assert await redis.keys("tts:cache:*") == []


async def test_without_streaming_or_when_cached_the_answer_is_the_whole_file(
    redis, redis_url, tmp_path
):
    with tts_server(redis_url, tmp_path) as (url, _):
        async with client(url) as tts:
            whole = await tts.post("/api/tts", json={"text": SHORT, "progressive": True})
            first = await tts.post("/api/tts", json={**PROGRESSIVE, "text": LONG})
            await (await tts.get(first.json()["data"]["audio_url"])).aread()
            hit = await tts.post("/api/tts", json={**PROGRESSIVE, "text": LONG})
    assert whole.json()["data"]["complete"] is True and whole.json()["data"]["duration"] > 0
    assert hit.json()["data"]["complete"] is True and hit.json()["data"]["cached"] is True


@pytest.mark.parametrize("extra", [{"return_binary": True}, {"file_id": "chosen-id-0123456789"}])
async def test_a_binary_answer_or_a_chosen_id_comes_as_before(redis, redis_url, tmp_path, extra):
    with tts_server(redis_url, tmp_path, chunk_delay_s=0.01) as (url, _):
        async with client(url) as tts:
            response = await tts.post("/api/tts", json={**PROGRESSIVE, "text": LONG, **extra})
    assert response.status_code == 200
    if extra.get("return_binary"):
        assert response.content[:4] == b"RIFF" and len(response.content) > 44
    else:
        data = response.json()["data"]
        assert data["complete"] is True and data["file_id"] == extra["file_id"]
        assert data["file_size"] == stored(tmp_path, data["audio_url"]).stat().st_size


# A part as a writer leaves it: an open-ended WAV header, then some audio.
HEADER = b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 32000, 64000, 2, 16)
HEADER += b"data\xff\xff\xff\xff"


def a_part(assets: Path, file_id: str, last_write_ago_s: float = 0.0) -> Path:
    """`{file_id}.wav.part` of the default test user, as a writer (not this app) left it."""
    part = assets / "anonymous" / "audio" / f"{file_id}.wav.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(HEADER + b"\x01\x00" * 1000)
    written = time.time() - last_write_ago_s
    os.utime(part, (written, written))
    return part


async def test_a_part_whose_writer_is_gone_is_a_404_and_is_swept(redis, redis_url, tmp_path):
    # A replica killed mid-synthesis: its part was last written longer ago than the idle
    # limit (tts_timeout_s: its writer would have given up by then).
    with tts_server(redis_url, tmp_path, {"tts_timeout_s": 0.5}) as (url, _):
        part = a_part(tmp_path, "dead-writer-0123456789", last_write_ago_s=30)
        async with client(url) as tts:
            dead = await tts.get("/mnt/user_assets/anonymous/audio/dead-writer-0123456789.wav")
            for _ in range(300):  # swept by the running replica (every 5.5 s), not at start
                if not part.exists():
                    break
                await asyncio.sleep(0.1)
    assert (dead.status_code, dead.json()["error"]["code"]) == (404, "not_found")
    assert not part.exists()


async def test_a_reader_gives_up_once_the_part_stops_growing(redis, redis_url, tmp_path):
    # The idle limit is the default 60 s: the reader must not wait it out from its own start,
    # only from the part's last write (here made long past while the reader follows it).
    with tts_server(redis_url, tmp_path) as (url, _):
        part = a_part(tmp_path, "stopped-writer-0123456789")
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as tts:
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):  # broken off: seen incomplete
                async with tts.stream(
                    "GET", "/mnt/user_assets/anonymous/audio/stopped-writer-0123456789.wav"
                ) as response:
                    assert response.headers["cache-control"] == "no-store"
                    async for chunk in response.aiter_bytes():
                        received += chunk
                        os.utime(part, (time.time() - 120, time.time() - 120))
    assert received.startswith(HEADER)


async def test_a_part_written_by_another_replica_is_followed_to_its_end(redis, redis_url, tmp_path):
    # No write of this replica wakes the reader: it looks for more on its own, and ends when
    # the part is renamed to its own name.
    with tts_server(redis_url, tmp_path) as (url, _):
        part = a_part(tmp_path, "other-replica-0123456789")
        async with client(url) as tts:
            received = b""
            async with tts.stream(
                "GET", "/mnt/user_assets/anonymous/audio/other-replica-0123456789.wav"
            ) as response:
                async for chunk in response.aiter_bytes():
                    if not received:  # it has begun: more comes, then the whole file
                        with part.open("ab") as out:
                            out.write(b"\x02\x00" * 500)
                    received += chunk
                    if len(received) == len(HEADER) + 3000:
                        part.rename(part.with_suffix(""))
    assert received == HEADER + b"\x01\x00" * 1000 + b"\x02\x00" * 500


async def test_shutdown_finishes_the_speech_whose_url_was_handed_out(redis, redis_url, tmp_path):
    with tts_server(redis_url, tmp_path, chunk_delay_s=0.02) as (url, _):
        async with client(url) as tts:
            data = (await tts.post("/api/tts", json=PROGRESSIVE)).json()["data"]
    # The replica stopped right after answering: it finished the audio first.
    assert data["complete"] is False
    final = stored(tmp_path, data["audio_url"])
    assert final.exists() and len(pcm_of(final.read_bytes())) > 0
    assert list(tmp_path.rglob("*.part")) == []
    assert await redis.keys("tts:cache:*") != []


async def test_shutdown_gives_up_what_is_not_finished_within_its_wait(redis, redis_url, tmp_path):
    settings = {"tts_shutdown_wait_s": 0.0}
    with tts_server(redis_url, tmp_path, settings, chunk_delay_s=CHUNK_DELAY_S) as (url, _):
        async with client(url) as tts:
            data = (await tts.post("/api/tts", json=PROGRESSIVE)).json()["data"]
    assert data["complete"] is False
    assert not stored(tmp_path, data["audio_url"]).exists()
    assert list(tmp_path.rglob("*.part")) == []
