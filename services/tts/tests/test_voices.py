"""GET /api/tts/voices: the public fields of the voices file, reloaded when it changes."""

import json
import os
import shutil

import pytest

from avatar_characters.presets import SHIPPED_PRESETS
from avatar_tts.app import create_app
from avatar_tts.settings import TtsSettings
from avatar_tts.voices import SHIPPED_VOICES, VoicesFileError


@pytest.fixture
def voices_path(tmp_path):
    path = tmp_path / "voices.json"
    shutil.copy(SHIPPED_VOICES, path)
    return path


async def test_only_public_fields_are_listed(app_client, redis_url, voices_path):
    async with app_client(
        create_app(TtsSettings(redis_url=redis_url, voices_file=str(voices_path)))
    ) as tts:
        response = await tts.get("/api/tts/voices")
    data = response.json()["data"]
    assert data["default_voice_id"] == "default"
    default = next(v for v in data["voices"] if v["id"] == "default")
    assert default == {
        "id": "default",
        "name": "기본 음성",
        "language": "ko",
        "description": "기본 한국어 음성",
    }
    assert "ref_audio_path" not in response.text and "gpt_sovits" not in response.text


def test_every_preset_character_has_its_voice():
    presets = json.loads(SHIPPED_PRESETS.read_text())["characters"]
    voices = {v["id"] for v in json.loads(SHIPPED_VOICES.read_text())["voices"]}
    assert {p["voice_id"] for p in presets} <= voices


async def test_voices_follow_the_file_and_survive_a_broken_one(app_client, redis_url, voices_path):
    app = create_app(TtsSettings(redis_url=redis_url, voices_file=str(voices_path)))
    async with app_client(app) as tts:
        data = json.loads(voices_path.read_text())
        data["voices"][0]["name"] = "새 이름"
        voices_path.write_text(json.dumps(data, ensure_ascii=False))
        os.utime(voices_path, ns=(1, 1))
        renamed = (await tts.get("/api/tts/voices")).json()["data"]["voices"][0]["name"]
        voices_path.write_text('{"default_voice_id": "nope", "voices": []}')
        os.utime(voices_path, ns=(2, 2))
        kept = (await tts.get("/api/tts/voices")).json()["data"]["voices"][0]["name"]
    assert renamed == kept == "새 이름"


def test_a_broken_voices_file_stops_start_up(tmp_path, redis_url):
    broken = tmp_path / "voices.json"
    voice = {"id": "b", "name": "n", "language": "ko", "description": ""}
    broken.write_text(json.dumps({"default_voice_id": "a", "voices": [voice]}))
    with pytest.raises(VoicesFileError, match="default voice"):
        create_app(TtsSettings(redis_url=redis_url, voices_file=str(broken)))
