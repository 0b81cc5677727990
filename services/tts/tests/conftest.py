"""TTS service fixtures: a GPT-SoVITS emulator over real HTTP (with a first-byte latency, and
the languages of a v2 model that these tests use), and how a test finds a stored file."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread

SHORT, LONG = "안녕하세요.", "안녕하세요. 오늘은 날씨가 정말 좋네요. 같이 산책하러 갈까요?"


@pytest.fixture
def emulator() -> Iterator[tuple[str, gpt_sovits.GptSovitsConfig]]:
    config = gpt_sovits.GptSovitsConfig(latency_s=0.2, languages=("ko", "en", "auto"))
    with serve_in_thread(gpt_sovits.create_app(config)) as url:
        yield url, config


def stored(tmp_path: Path, audio_url: str) -> Path:
    """The file behind an audio URL, under the assets folder `tmp_path`."""
    return tmp_path / audio_url.removeprefix("/mnt/user_assets/")
