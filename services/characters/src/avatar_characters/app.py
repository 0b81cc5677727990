from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from avatar_characters.presets import PresetCatalog
from avatar_characters.routes import router
from avatar_characters.service import Characters
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore
from avatar_characters.voices import VoiceDirectory
from avatar_shared.app import create_service_app


def create_app(settings: CharactersSettings | None = None) -> FastAPI:
    settings = settings or CharactersSettings()
    presets = PresetCatalog(settings.presets_path)  # a broken presets file stops start-up here

    @asynccontextmanager
    async def characters_state(app: FastAPI) -> AsyncIterator[None]:
        app.state.characters = Characters(
            presets=presets,
            store=CharacterStore(app.state.redis),
            voices=VoiceDirectory(app.state.http, settings.tts_url, settings.voices_cache_s),
            images_dir=Path(settings.images_dir) if settings.images_dir else None,
        )
        yield

    return create_service_app(
        service="characters",
        title="Avatar Forge characters",
        description="Preset and user-made characters; Character Card V2/V3 import and export.",
        settings=settings,
        routers=[router],
        extra_lifespan=characters_state,
    )
