from fastapi import FastAPI

from avatar_characters.routes import router
from avatar_characters.settings import CharactersSettings
from avatar_shared.app import create_service_app


def create_app(settings: CharactersSettings | None = None) -> FastAPI:
    settings = settings or CharactersSettings()
    return create_service_app(
        service="characters",
        title="Avatar Forge characters",
        description="Preset and user-made characters.",
        settings=settings,
        routers=[router],
    )
