from fastapi import FastAPI

from avatar_auth.routes import router
from avatar_auth.settings import AuthSettings
from avatar_shared.app import create_service_app


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    return create_service_app(
        service="auth",
        title="Avatar Forge auth",
        description="Google sign-in; issues the JWT every service verifies.",
        settings=settings,
        routers=[router],
    )
