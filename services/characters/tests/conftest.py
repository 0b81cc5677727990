"""Characters service fixtures: the app over a real Redis, with the caller's identity taken
from an `X-Test-User` header in place of the shared identity dependency (real tokens and
anonymous cookies are tested end to end, tests/e2e/test_identity.py)."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from avatar_characters.presets import SHIPPED_PRESETS

from .helpers import characters_app


@pytest.fixture
def presets_file(tmp_path: Path) -> Path:
    path = tmp_path / "characters.json"
    shutil.copy(SHIPPED_PRESETS, path)
    return path


@pytest.fixture
async def characters(app_client, redis_url, presets_file) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(characters_app(redis_url, presets_file)) as client:
        yield client
