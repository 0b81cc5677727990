"""Helpers for the auth tests (plain functions and constants; the fixtures are in conftest.py):
a small service of its own (`probe`) that resolves its caller with the shared identity
dependency, and a real auth service served over HTTP in a thread.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

from pathlib import Path

import httpx
from fastapi import APIRouter

from avatar_auth.app import create_app as auth_app
from avatar_auth.settings import AuthSettings
from avatar_emulators.server import serve_in_thread
from avatar_shared.app import create_service_app
from avatar_shared.identity import CallerIdentity
from avatar_shared.settings import ServiceSettings

FRONTEND = "http://localhost:3000"
ISSUER, AUDIENCE = "avatar-forge-auth", "avatar-forge"

probe_routes = APIRouter()


@probe_routes.get("/who")
@probe_routes.post("/who")
async def who(identity: CallerIdentity) -> dict[str, object]:
    return {
        "user_id": identity.user_id,
        "signed_in": identity.signed_in,
        "address": identity.address,
    }


def start_auth(redis_url: str, keys_file: Path, port: int = 0):
    settings = AuthSettings(redis_url=redis_url, signing_keys_file=str(keys_file))
    return serve_in_thread(auth_app(settings), port=port, lifespan="on")


def probe_app(redis_url: str, auth_url: str, **settings: object):
    config = ServiceSettings(redis_url=redis_url, auth_url=auth_url, **settings)
    return create_service_app("probe", config, probe_routes)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")
