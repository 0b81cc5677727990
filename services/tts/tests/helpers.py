"""Helpers for the TTS tests (plain functions and constants; the fixtures are in conftest.py):
texts to speak, and how a test finds a stored file.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

from pathlib import Path

SHORT, LONG = "안녕하세요.", "안녕하세요. 오늘은 날씨가 정말 좋네요. 같이 산책하러 갈까요?"


def stored(tmp_path: Path, audio_url: str) -> Path:
    """The file behind an audio URL, under the assets folder `tmp_path`."""
    return tmp_path / audio_url.removeprefix("/mnt/user_assets/")
