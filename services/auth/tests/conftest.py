"""A small service of its own (`probe`) that resolves its caller with the shared identity
dependency, verifying tokens with the public keys of a real auth service (served over HTTP in
a thread, keys from a file)."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from avatar_auth.app import create_app as auth_app
from avatar_auth.settings import AuthSettings
from avatar_emulators.server import serve_in_thread
from avatar_shared.app import create_service_app
from avatar_shared.identity import CallerIdentity
from avatar_shared.settings import ServiceSettings
from avatar_shared.tokens import SigningKeys, generate_key, read_key_set, write_key_set

FRONTEND = "http://localhost:3000"
ISSUER, AUDIENCE = "avatar-forge-auth", "avatar-forge"

probe_routes = APIRouter()


@probe_routes.get("/who")
@probe_routes.post("/who")
async def who(identity: CallerIdentity) -> dict[str, object]:
    return {"user_id": identity.user_id, "signed_in": identity.signed_in}


def start_auth(redis_url: str, keys_file: Path, port: int = 0):
    settings = AuthSettings(redis_url=redis_url, signing_keys_file=str(keys_file))
    return serve_in_thread(auth_app(settings), port=port, lifespan="on")


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


def probe_app(redis_url: str, auth_url: str, **settings: object):
    config = ServiceSettings(redis_url=redis_url, auth_url=auth_url, **settings)
    return create_service_app("probe", config, probe_routes)


@pytest.fixture
async def probe(app_client, redis_url, auth_url) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(probe_app(redis_url, auth_url, jwks_refresh_floor_s=0)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")
