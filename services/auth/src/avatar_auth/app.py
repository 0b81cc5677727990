from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from avatar_auth.deps import AuthState
from avatar_auth.keys import signing_keys
from avatar_auth.routes import router
from avatar_auth.service import AuthService
from avatar_auth.settings import AuthSettings
from avatar_shared.app import create_service_app
from avatar_shared.health import DISABLED, Status, probe_url
from avatar_shared.identity import IdentityResolver
from avatar_shared.state import BaseState
from avatar_shared.tokens import LocalKeys, TokenVerifier


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    keys = signing_keys(settings)  # missing or broken keys stop start-up here

    async def auth_state(base: BaseState) -> AsyncIterator[AuthState]:
        verifier = TokenVerifier(LocalKeys(keys.keys), keys.issuer, keys.audience)
        identity = IdentityResolver(settings, verifier, base["redis"])
        auth = AuthService(settings, base["redis"], keys, identity, base["http"])
        try:
            yield AuthState(auth=auth, identity=identity)
        finally:
            await auth.close()

    async def sign_in_check(client: httpx.AsyncClient) -> Status:
        if not settings.sign_in_enabled:
            return DISABLED
        return await probe_url(client, settings.oidc_discovery_url)

    return create_service_app(
        "auth", settings, router, state=auth_state, upstream_checks={"sign_in": sign_in_check}
    )
