from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

import httpx
from fastapi import FastAPI

from avatar_shared.app import BaseState, create_service_app, open_http_client
from avatar_tts.engines import make_engines
from avatar_tts.engines.gpt_sovits import gpt_sovits_check
from avatar_tts.files import AudioFolder
from avatar_tts.retention import Retention
from avatar_tts.routes import router
from avatar_tts.service import SpeechService
from avatar_tts.settings import TtsSettings
from avatar_tts.store import SpeechStore
from avatar_tts.voices import voices_file


class TtsState(TypedDict):
    speech: SpeechService


def create_app(settings: TtsSettings | None = None) -> FastAPI:
    settings = settings or TtsSettings()
    voices = voices_file(settings.voices_path)  # a broken voices file stops start-up here

    @asynccontextmanager
    async def tts_state(base: BaseState) -> AsyncIterator[TtsState]:
        redis = base["redis"]
        # The engine's own client: GPT-SoVITS may take far longer than a peer service.
        timeout = httpx.Timeout(settings.tts_timeout_s, connect=3.0)
        async with open_http_client(timeout) as engine_http:
            yield TtsState(
                speech=SpeechService(
                    voices=voices,
                    engines=make_engines(settings, engine_http),
                    default_engine=settings.tts_engine,
                    store=SpeechStore(redis),
                    folder=AudioFolder(Path(settings.assets_dir)),
                    retention=Retention(
                        redis, settings.assets_max_bytes, settings.assets_max_age_s
                    ),
                    wait_s=settings.tts_timeout_s,
                )
            )

    return create_service_app(
        service="tts",
        title="Avatar Forge tts",
        description="Speech in a character's voice over GPT-SoVITS; per-user audio files.",
        settings=settings,
        routers=[router],
        streams_responses=True,
        state=tts_state,
        upstream_checks={"tts": gpt_sovits_check(settings)},
    )
