"""Auth fixtures: signing keys in a file, a real auth service serving their public keys over
HTTP in a thread, and the `probe` service (tests/helpers.py) that verifies tokens with them."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from avatar_shared.tokens import SigningKeys, generate_key, read_key_set, write_key_set

from .helpers import AUDIENCE, ISSUER, probe_app, start_auth


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_key_set(path, [generate_key()])
    return path


@pytest.fixture
def signer(keys_file: Path) -> SigningKeys:
    return SigningKeys(read_key_set(keys_file), ISSUER, AUDIENCE, lifetime_s=3600)


@pytest.fixture
def auth_url(redis_url, keys_file) -> Iterator[str]:
    with start_auth(redis_url, keys_file) as url:
        yield url


@pytest.fixture
async def probe(app_client, redis_url, auth_url) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=0)) as client:
        yield client
