from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from avatar_characters.adoption import router as adoption_router
from avatar_characters.deps import CharactersState
from avatar_characters.personas.routes import router as personas_router
from avatar_characters.personas.service import PersonaService
from avatar_characters.presets import PresetCatalog
from avatar_characters.routes import router as characters_router
from avatar_characters.service import CharacterService
from avatar_characters.settings import CharactersSettings
from avatar_shared.app import create_service_app
from avatar_shared.state import BaseState


def create_app(settings: CharactersSettings | None = None) -> FastAPI:
    settings = settings or CharactersSettings()
    presets = PresetCatalog(settings.characters_file)  # a broken presets file stops start-up here

    async def characters_state(base: BaseState) -> AsyncIterator[CharactersState]:
        service = CharacterService(settings, base["redis"], base["http"], presets)
        personas = PersonaService(settings, base["redis"])
        yield CharactersState(characters=service, personas=personas)

    router = APIRouter()
    router.include_router(characters_router)
    router.include_router(personas_router)
    router.include_router(adoption_router)  # a peer's call at sign-in, not public
    return create_service_app("characters", settings, router, state=characters_state)
