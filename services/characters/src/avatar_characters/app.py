from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from fastapi import FastAPI

from avatar_characters.peers.tts import VoiceDirectory
from avatar_characters.presets import PresetCatalog
from avatar_characters.routes import router
from avatar_characters.service import CharacterService
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore
from avatar_shared.app import BaseState, create_service_app


class CharactersState(TypedDict):
    characters: CharacterService


def create_app(settings: CharactersSettings | None = None) -> FastAPI:
    settings = settings or CharactersSettings()
    presets = PresetCatalog(settings.presets_path)  # a broken presets file stops start-up here

    @asynccontextmanager
    async def characters_state(base: BaseState) -> AsyncIterator[CharactersState]:
        yield CharactersState(
            characters=CharacterService(
                presets=presets,
                store=CharacterStore(base["redis"]),
                voices=VoiceDirectory(base["http"], settings.tts_url, settings.voices_cache_s),
                images_dir=Path(settings.images_dir) if settings.images_dir else None,
            )
        )

    return create_service_app(
        service="characters",
        title="Avatar Forge characters",
        description="Preset and user-made characters; Character Card V2/V3 import and export.",
        settings=settings,
        routers=[router],
        state=characters_state,
    )
