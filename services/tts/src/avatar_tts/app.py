from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from avatar_shared.app import create_service_app, open_http_client
from avatar_shared.state import BaseState
from avatar_tts.deps import TtsState
from avatar_tts.engines.health import default_voice_check
from avatar_tts.routes import router
from avatar_tts.service import SpeechService
from avatar_tts.settings import TtsSettings
from avatar_tts.voices import voices_file


def create_app(settings: TtsSettings | None = None) -> FastAPI:
    settings = settings or TtsSettings()
    voices = voices_file(settings.voices_file)  # a broken voices file stops start-up here
    # The engine's own client: GPT-SoVITS may take far longer than a peer service.
    engine_timeout = httpx.Timeout(settings.tts_timeout_s, connect=3.0)

    async def tts_state(base: BaseState) -> AsyncIterator[TtsState]:
        async with open_http_client(engine_timeout) as engine_http:
            speech = SpeechService(settings, base["redis"], engine_http, voices)
            await speech.start()
            try:
                yield TtsState(speech=speech)
            finally:
                await speech.close()

    checks = {"tts": default_voice_check(settings, voices)}
    return create_service_app("tts", settings, router, state=tts_state, upstream_checks=checks)
