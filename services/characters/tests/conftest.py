"""Characters service fixtures: the app over a real Redis, with the caller's identity taken
from an `X-Test-User` header through the shared identity dependency (the auth service will
put a verified JWT there)."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import Request

from avatar_characters.app import create_app
from avatar_characters.presets import SHIPPED_PRESETS
from avatar_characters.settings import CharactersSettings
from avatar_devstack.stack import free_port
from avatar_shared.identity import current_user_id


@pytest.fixture
def presets_file(tmp_path: Path) -> Path:
    path = tmp_path / "characters.json"
    shutil.copy(SHIPPED_PRESETS, path)
    return path


@pytest.fixture
async def characters(app_client, redis_url, presets_file) -> AsyncIterator[httpx.AsyncClient]:
    settings = CharactersSettings(
        redis_url=redis_url,
        characters_file=str(presets_file),
        tts_url=f"http://127.0.0.1:{free_port()}",  # no TTS service: any voice slug goes
    )
    app = create_app(settings)

    async def user_from_header(request: Request) -> str:
        return request.headers.get("X-Test-User", "anonymous")

    app.dependency_overrides[current_user_id] = user_from_header
    async with app_client(app) as client:
        yield client


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name}
