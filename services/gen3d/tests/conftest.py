"""gen3d fixtures: the API in-process over a real Redis (pictures are made on the spot by
helpers.picture)."""

from collections.abc import AsyncIterator

import httpx
import pytest

from avatar_gen3d.app import create_app
from avatar_gen3d.settings import Gen3dSettings


@pytest.fixture
def settings(redis_url, redis, tmp_path) -> Gen3dSettings:
    """On a flushed Redis (`redis`): every test starts with empty queues."""
    return Gen3dSettings(redis_url=redis_url, assets_dir=str(tmp_path / "assets"))


@pytest.fixture
async def gen3d(app_client, settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings)) as client:
        yield client
