from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from avatar_shared.app import create_service_app, open_http_client
from avatar_tts.engines import GptSovitsEngine
from avatar_tts.local_engine import LocalEngine
from avatar_tts.retention import Retention
from avatar_tts.routes import router
from avatar_tts.settings import TtsSettings
from avatar_tts.speech import SpeechService
from avatar_tts.upstreams import gpt_sovits_check
from avatar_tts.voices import voices_file


def create_app(settings: TtsSettings | None = None) -> FastAPI:
    settings = settings or TtsSettings()
    voices = voices_file(settings.voices_path)  # a broken voices file stops start-up here

    @asynccontextmanager
    async def tts_state(app: FastAPI) -> AsyncIterator[None]:
        app.state.voices = voices
        timeout = httpx.Timeout(settings.tts_timeout_s, connect=3.0)
        async with open_http_client(timeout) as tts_http:
            engines = {"gpt-sovits": GptSovitsEngine(tts_http, settings), "local": LocalEngine()}
            app.state.speech = SpeechService(
                app.state.redis,
                engines,
                settings.tts_engine,
                Path(settings.assets_dir),
                settings.tts_timeout_s,
                Retention(app.state.redis, settings.assets_max_bytes, settings.assets_max_age_s),
            )
            yield

    return create_service_app(
        service="tts",
        title="Avatar Forge tts",
        description="Speech in a character's voice over GPT-SoVITS; per-user audio files.",
        settings=settings,
        routers=[router],
        streams_responses=True,
        extra_lifespan=tts_state,
        upstream_checks={"tts": gpt_sovits_check(settings)},
    )
