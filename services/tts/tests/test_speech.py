"""POST /api/tts and the audio file route, against the GPT-SoVITS emulator over real HTTP,
a real Redis and a real assets folder."""

import asyncio
import io
import json
import math
import os
import struct
import tempfile
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import mutagen
import pytest

from avatar_devstack.ports import free_port
from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread
from avatar_tts.audio import OPEN_ENDED, duration_s
from avatar_tts.files import AudioFolder, StoredAudio
from avatar_tts.settings import TtsSettings
from avatar_tts.voices import SHIPPED_VOICES
from tests.helpers import as_user, logged

from .helpers import LONG, SHORT, make_app, stored


@pytest.fixture
async def tts(app_client, redis_url, tmp_path, emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_app(redis_url, tmp_path, emulator[0])) as client:
        yield client


def synth_count(emulator) -> int:
    return len([r for r in emulator[1].recorder.requests if r.status == 200])


@pytest.fixture(params=["one file system", "another file system"])
def bobs_folder(request, tmp_path) -> Iterator[None]:
    """Bob's audio folder on the assets' file system (a second name for cached audio is a
    hard link) or on another one (a copy: /dev/shm, linked in)."""
    if request.param == "one file system":
        yield
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        if os.stat(other).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same file system as the test's folder")
        (tmp_path / "bob").symlink_to(other, target_is_directory=True)
        yield


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


@pytest.mark.parametrize("media_type", ["ogg", "wav", "raw", "aac"])
async def test_streamed_audio_lasts_as_long_as_all_its_pieces(tts, emulator, media_type):
    # api_v2 packs each streamed piece of ogg or aac as a file of its own: the file is a chain.
    body = {"text": LONG, "media_type": media_type, "streaming_mode": 2}
    data = (await tts.post("/api/tts", json=body)).json()["data"]
    config = emulator[1]
    spoken = gpt_sovits.audio_duration_s(LONG, 1.0, config)
    if media_type != "aac":
        assert data["duration"] == pytest.approx(spoken, abs=0.05)
        return
    # An ADTS stream does not record the padding that fills its last frame: each piece may
    # be up to a frame (1024 samples) long, never short.
    pieces = math.ceil(spoken / config.stream_chunk_s)
    assert spoken - 0.001 <= data["duration"] <= spoken + pieces * 1024 / config.sample_rate


@pytest.mark.parametrize(("version", "rate"), [("v3", 24000), ("v4", 48000)])
@pytest.mark.parametrize("streaming_mode", [0, 2])
async def test_raw_audio_lasts_as_long_at_the_servers_rate(
    app_client, redis_url, tmp_path, version, rate, streaming_mode
):
    # Raw PCM says nothing of its rate: TTS_SAMPLE_RATE tells the model's (v3 24 kHz, v4 48).
    config = gpt_sovits.GptSovitsConfig(sample_rate=rate, languages=("ko",), version=version)
    body = {"text": LONG, "media_type": "raw", "streaming_mode": streaming_mode}
    with serve_in_thread(gpt_sovits.create_app(config)) as url:
        app = make_app(redis_url, tmp_path, url, tts_sample_rate=rate)
        async with app_client(app) as tts:
            data = (await tts.post("/api/tts", json=body)).json()["data"]
            served = await tts.get(data["audio_url"])
            binary = await tts.post("/api/tts", json={**body, "return_binary": True})
    assert data["duration"] == pytest.approx(gpt_sovits.audio_duration_s(LONG, 1.0, config))
    # Little-endian, as api_v2 sends it (numpy's int16): never audio/L16, big-endian by RFC.
    raw_type = f"audio/x-raw; format=S16LE; rate={rate}; channels=1"
    assert served.headers["content-type"] == binary.headers["content-type"] == raw_type
    assert served.content == binary.content


async def test_aac_pieces_each_encoded_alone_last_as_long_as_their_samples(tmp_path):
    # Real encoder output (libavcodec's AAC, which api_v2's ffmpeg runs), one encoder per
    # piece as api_v2 streams: each piece has its own priming frame. Pieces of whole frames
    # leave no padding, so the sum is exact.
    config = gpt_sovits.GptSovitsConfig(sample_rate=24000)
    pcm = gpt_sovits.synthesize(LONG, 1.0, config)[: 1024 * 40]
    pieces = [pcm[:8192], pcm[8192:30720], pcm[30720:]]
    path = tmp_path / "streamed.aac"
    path.write_bytes(b"".join(gpt_sovits.encode_aac(p, 24000) for p in pieces))
    assert duration_s(path, "aac", 32000) == pytest.approx(1024 * 40 / 24000, abs=0.001)
    whole = tmp_path / "whole.aac"
    whole.write_bytes(gpt_sovits.encode_aac(pcm, 24000))
    assert duration_s(whole, "aac", 32000) == pytest.approx(1024 * 40 / 24000, abs=0.001)


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


async def test_a_cache_hit_evicted_before_it_is_linked_is_made_again(
    tts, tmp_path, emulator, monkeypatch, bobs_folder
):
    alice = (await tts.post("/api/tts", json={"text": SHORT}, headers=as_user("alice"))).json()
    own_copy = AudioFolder.own_copy

    async def evicted_first(
        folder: AudioFolder, audio: StoredAudio, user_id: str, file_id: str | None
    ) -> Path:
        # Patched only to hit the race window: another request's retention evicts the cached
        # audio after this request's cache lookup found it, before its own name is made.
        monkeypatch.setattr(AudioFolder, "own_copy", own_copy)  # once
        audio.path.unlink()
        return await own_copy(folder, audio, user_id, file_id)

    monkeypatch.setattr(AudioFolder, "own_copy", evicted_first)
    file_id = "bobs-chosen-id-0123456789"
    body = {"text": SHORT, "file_id": file_id}
    bob = await tts.post("/api/tts", json=body, headers=as_user("bob"))
    assert bob.status_code == 200, bob.text
    data = bob.json()["data"]
    assert data["cached"] is False and synth_count(emulator) == 2  # a miss after all: made again
    served = await tts.get(data["audio_url"], headers=as_user("bob"))
    assert served.status_code == 200 and len(served.content) == data["file_size"]
    assert served.content == stored(tmp_path, data["audio_url"]).read_bytes()
    with wave.open(io.BytesIO(served.content)) as audio:
        assert audio.getnframes() > 0
    assert data["file_size"] == alice["data"]["file_size"]  # the same speech


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


async def test_a_failure_inside_the_speech_server_is_502_with_its_exception_in_the_log(
    app_client, redis_url, tmp_path
):
    # api_v2 answers every failure of its pipeline (CUDA out of memory, a reference clip it
    # cannot read) with 400 {"message": "tts failed", "Exception": ...}: not the request's fault.
    config = gpt_sovits.GptSovitsConfig(fail_status=400)
    with serve_in_thread(gpt_sovits.create_app(config)) as url, logged("avatar") as records:
        async with app_client(make_app(redis_url, tmp_path, url)) as tts:
            failed = await tts.post("/api/tts", json={"text": SHORT})
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "tts_error")
    assert "injected failure" not in failed.text
    assert any("injected failure" in r.getMessage() for r in records)  # the Exception field
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


async def test_a_streamed_wav_goes_out_with_the_header_its_file_gets(tts, tmp_path):
    # api_v2's first piece is a header claiming 0 bytes of audio: "no audio" to a player.
    body = {"text": LONG, "return_binary": True, "streaming_mode": 2}
    streamed = (await tts.post("/api/tts", json=body)).content
    (path,) = tmp_path.glob("*/audio/*.wav")
    whole = path.read_bytes()
    data_at = streamed.find(b"data")
    assert struct.unpack_from("<I", streamed, 4)[0] == OPEN_ENDED  # to the end of the stream
    assert struct.unpack_from("<I", streamed, data_at + 4)[0] == OPEN_ENDED
    assert (
        streamed[8:data_at] == whole[8:data_at] and streamed[data_at + 8 :] == whole[data_at + 8 :]
    )
    assert struct.unpack_from("<I", whole, data_at + 4)[0] == len(whole) - data_at - 8


async def test_streamed_binary_is_kept_under_a_chosen_file_id(tts, tmp_path, emulator):
    file_id = "streamed-id-0123456789"
    body = {"text": LONG, "return_binary": True, "streaming_mode": 1, "file_id": file_id}
    streamed = await tts.post("/api/tts", json=body)
    assert streamed.status_code == 200 and streamed.content[:4] == b"RIFF"
    served = await tts.get(f"/mnt/user_assets/anonymous/audio/{file_id}.wav")
    assert served.status_code == 200
    with wave.open(io.BytesIO(served.content)) as audio:
        assert audio.getnframes() > 0
    made = synth_count(emulator)
    again = await tts.post("/api/tts", json={**body, "text": SHORT})
    assert again.status_code == 409 and again.json()["error"]["code"] == "file_id_taken"
    assert synth_count(emulator) == made  # refused before any synthesis


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


async def test_a_voices_own_prompt_lang_is_used_unless_the_request_sends_one(
    app_client, redis_url, tmp_path, emulator
):
    voices = json.loads(SHIPPED_VOICES.read_text())
    english = {"ref_audio_path": "en.wav", "prompt_text": "Hello there.", "prompt_lang": "en"}
    voices["voices"].append(
        {"id": "english", "name": "e", "language": "en", "description": "", "gpt_sovits": english}
    )
    voices_file = tmp_path / "voices.json"
    voices_file.write_text(json.dumps(voices))
    app = make_app(redis_url, tmp_path / "assets", emulator[0], voices_file=str(voices_file))
    body = {"text": "Hi.", "voice_id": "english", "text_lang": "en"}
    async with app_client(app) as tts:
        voices_own = (await tts.post("/api/tts", json=body)).json()["data"]  # as chat sends it
        sent_en = (await tts.post("/api/tts", json={**body, "prompt_lang": "en"})).json()["data"]
        sent_ko = (await tts.post("/api/tts", json={**body, "prompt_lang": "ko"})).json()["data"]
    made = [r.params["prompt_lang"] for r in emulator[1].recorder.requests if r.status == 200]
    assert made == ["en", "ko"]
    assert [voices_own["cached"], sent_en["cached"], sent_ko["cached"]] == [False, True, False]
