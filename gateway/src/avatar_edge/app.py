"""The edge: the gateway's own small app for /, the merged docs and the aggregate health.

Traefik also sends it every path no service claims, so unknown paths get the error envelope.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from avatar_edge.health import HealthCache
from avatar_edge.openapi_source import MergedOpenApi
from avatar_edge.routes import router
from avatar_edge.settings import EdgeSettings
from avatar_shared.app import create_service_app


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or EdgeSettings()

    @asynccontextmanager
    async def caches(app: FastAPI) -> AsyncIterator[None]:
        app.state.health_cache = HealthCache(settings.health_cache_s)
        app.state.merged_openapi = MergedOpenApi(settings.openapi_cache_s)
        yield

    return create_service_app(
        service="edge",
        title="Avatar Forge edge",
        settings=settings,
        routers=[router],
        extra_lifespan=caches,
        own_docs=False,
    )
