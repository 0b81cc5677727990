from fastapi import FastAPI

from avatar_shared.app import create_service_app
from avatar_tts.routes import router
from avatar_tts.settings import TtsSettings
from avatar_tts.upstreams import gpt_sovits_check


def create_app(settings: TtsSettings | None = None) -> FastAPI:
    settings = settings or TtsSettings()
    return create_service_app(
        service="tts",
        title="Avatar Forge tts",
        description="Speech in a character's voice over GPT-SoVITS; per-user audio files.",
        settings=settings,
        routers=[router],
        streams_responses=True,
        upstream_checks={"tts": gpt_sovits_check(settings)},
    )
