"""The local engine (espeak-ng from the espeakng-loader wheel): real speech, no GPU."""

import subprocess
import sys
import wave
from pathlib import Path

import mutagen
import pytest

from avatar_tts.app import create_app
from avatar_tts.settings import TtsSettings


@pytest.fixture
async def tts(app_client, redis_url, tmp_path):
    settings = TtsSettings(redis_url=redis_url, assets_dir=str(tmp_path), tts_engine="local")
    async with app_client(create_app(settings)) as client:
        yield client


def stored(tmp_path: Path, audio_url: str) -> Path:
    return tmp_path / audio_url.removeprefix("/mnt/user_assets/")


async def test_korean_speech_as_wav(tts, tmp_path):
    short = (await tts.post("/api/tts", json={"text": "안녕하세요."})).json()["data"]
    long = await tts.post("/api/tts", json={"text": "안녕하세요. 오늘은 날씨가 정말 좋네요."})
    long_data = long.json()["data"]
    with wave.open(str(stored(tmp_path, short["audio_url"]))) as audio:
        assert audio.getnchannels() == 1 and audio.getsampwidth() == 2
        assert audio.getnframes() > audio.getframerate() * 0.5  # more than half a second
    assert 0 < short["duration"] < long_data["duration"]


async def test_ogg_from_the_local_engine(tts, tmp_path):
    data = (await tts.post("/api/tts", json={"text": "반갑습니다!", "media_type": "ogg"})).json()
    path = stored(tmp_path, data["data"]["audio_url"])
    assert path.read_bytes()[:4] == b"OggS"
    assert mutagen.File(path).info.length == pytest.approx(data["data"]["duration"], abs=0.01)


async def test_formats_the_local_engine_cannot_make(tts):
    response = await tts.post("/api/tts", json={"text": "안녕", "media_type": "raw"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "tts_rejected"


# Two apps' engines in one process (the tests make an app per test; a replica could hold
# two), each speaking from its own thread, as asyncio.to_thread does.
TWO_ENGINES_AT_ONCE = """
import threading
from avatar_tts.engines.local import LocalEngine
params = {"text": "안녕하세요. 오늘은 날씨가 정말 좋네요.", "voice": "ko", "rate": 175,
          "pitch": 50, "media_type": "wav"}
def speak(engine):
    for _ in range(100):
        assert engine._encode(params)[:4] == b"RIFF"
threads = [threading.Thread(target=speak, args=(LocalEngine(),)) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_two_engines_speaking_at_once_do_not_crash_the_process():
    """espeak-ng's state is global: with an instance per engine this segfaulted."""
    done = subprocess.run(
        [sys.executable, "-c", TWO_ENGINES_AT_ONCE], capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
