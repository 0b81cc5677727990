"""The speech engines by name, as voices and `TTS_ENGINE` name them."""

import httpx

from avatar_tts.engines.base import SpeechEngine, Synthesis
from avatar_tts.engines.gpt_sovits import GptSovitsEngine
from avatar_tts.engines.local import LocalEngine
from avatar_tts.settings import TtsSettings

__all__ = ["SpeechEngine", "Synthesis", "make_engines"]


def make_engines(settings: TtsSettings, http: httpx.AsyncClient) -> dict[str, SpeechEngine]:
    """`http` is the client for GPT-SoVITS (its timeouts are the engine's)."""
    return {"gpt-sovits": GptSovitsEngine(http, settings), "local": LocalEngine()}
