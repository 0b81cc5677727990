from collections.abc import AsyncIterator
from typing import TypedDict

from fastapi import FastAPI

from avatar_auth.routes import router
from avatar_auth.service import AuthService
from avatar_auth.settings import AuthSettings
from avatar_shared.app import BaseState, create_service_app


class AuthState(TypedDict):
    auth: AuthService


async def auth_state(_: BaseState) -> AsyncIterator[AuthState]:
    yield AuthState(auth=AuthService())


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    return create_service_app("auth", settings or AuthSettings(), router, state=auth_state)
