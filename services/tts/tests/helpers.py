"""Helpers for the TTS tests (plain functions and constants; the fixtures are in conftest.py):
texts to speak, and how a test finds a stored file.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

from pathlib import Path

from fastapi import FastAPI

from avatar_shared.identity import current_identity
from avatar_tts.app import create_app
from avatar_tts.settings import TtsSettings
from tests.helpers import identity_from_test_header

SHORT, LONG = "안녕하세요.", "안녕하세요. 오늘은 날씨가 정말 좋네요. 같이 산책하러 갈까요?"


def stored(tmp_path: Path, audio_url: str) -> Path:
    """The file behind an audio URL, under the assets folder `tmp_path`."""
    return tmp_path / audio_url.removeprefix("/mnt/user_assets/")


def make_app(redis_url: str, assets: Path, tts_base_url: str, **settings: float) -> FastAPI:
    """The tts app on that Redis, assets folder and speech server (and other `settings`);
    callers are named by the X-Test-User header (`tests.helpers.as_user`)."""
    app = create_app(
        TtsSettings(
            redis_url=redis_url, assets_dir=str(assets), tts_base_url=tts_base_url, **settings
        )
    )
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app
