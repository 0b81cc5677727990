"""Characters service fixtures: the app over a real Redis, with the caller's identity taken
from an `X-Test-User` header in place of the shared identity dependency (real tokens and
anonymous cookies are tested end to end, tests/e2e/test_identity.py)."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from avatar_characters.app import create_app
from avatar_characters.presets import SHIPPED_PRESETS
from avatar_characters.settings import CharactersSettings
from avatar_devstack.ports import free_port
from avatar_devstack.testing import as_user, identity_from_test_header  # noqa: F401 (re-exported)
from avatar_shared.identity import current_identity


@pytest.fixture
def presets_file(tmp_path: Path) -> Path:
    path = tmp_path / "characters.json"
    shutil.copy(SHIPPED_PRESETS, path)
    return path


def characters_app(redis_url: str, presets_file: Path, **overrides):
    """The characters app, where `as_user(name)` speaks as that user."""
    settings = CharactersSettings(
        redis_url=redis_url,
        characters_file=str(presets_file),
        tts_url=f"http://127.0.0.1:{free_port()}",  # no TTS service: any voice slug goes
        **{"character_writes_per_min": 10_000, **overrides},  # the rate has its own test
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app


@pytest.fixture
async def characters(app_client, redis_url, presets_file) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(characters_app(redis_url, presets_file)) as client:
        yield client
