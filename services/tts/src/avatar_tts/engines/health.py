"""How the tts service tells whether it can speak (for /upstreamz and /api/health)."""

import httpx

from avatar_shared.health import HEALTHY, Status, UpstreamCheck
from avatar_shared.reloading_file import ReloadingFile
from avatar_tts.engines.gpt_sovits import gpt_sovits_check
from avatar_tts.settings import TtsSettings
from avatar_tts.voices import VoicesFile


def default_voice_check(settings: TtsSettings, voices: ReloadingFile[VoicesFile]) -> UpstreamCheck:
    """For /upstreamz: the state of the engine that speaks the default voice. The local
    engine runs in this process and needs nothing from outside (under `make run` speech
    works without GPT-SoVITS, and health must not say otherwise)."""
    sovits = gpt_sovits_check(settings)

    async def check(client: httpx.AsyncClient) -> Status:
        current = voices.get()
        default = current.find(current.default_voice_id)
        engine = (default.engine if default else None) or settings.tts_engine
        return HEALTHY if engine == "local" else await sovits(client)

    return check
