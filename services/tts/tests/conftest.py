"""TTS service fixtures: a GPT-SoVITS emulator over real HTTP (with a first-byte latency, and
the languages of a v2 model that these tests use)."""

from collections.abc import Iterator

import pytest

from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread


@pytest.fixture
def emulator() -> Iterator[tuple[str, gpt_sovits.GptSovitsConfig]]:
    config = gpt_sovits.GptSovitsConfig(latency_s=0.2, languages=("ko", "en", "auto"))
    with serve_in_thread(gpt_sovits.create_app(config)) as url:
        yield url, config
