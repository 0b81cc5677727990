"""The edge: the gateway's own small app for /, the merged docs and the aggregate health.

Traefik also sends it every path no service claims, so unknown paths get the error envelope.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from avatar_edge.health import check_everything
from avatar_edge.openapi_source import build_document
from avatar_edge.routes import router
from avatar_edge.settings import EdgeSettings
from avatar_edge.ttl_cache import TtlCache
from avatar_shared.app import create_service_app


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or EdgeSettings()

    @asynccontextmanager
    async def caches(app: FastAPI) -> AsyncIterator[None]:
        http, redis = app.state.http, app.state.redis
        edge_doc = get_openapi(title="edge", version="0.1.0", routes=app.routes)

        async def health() -> tuple[dict[str, Any], float]:
            return await check_everything(settings, http, redis), settings.health_cache_s

        app.state.health = TtlCache(health)
        app.state.openapi = TtlCache(lambda: build_document(settings, http, edge_doc))
        yield

    return create_service_app(
        service="edge",
        title="Avatar Forge edge",
        settings=settings,
        routers=[router],
        extra_lifespan=caches,
        own_docs=False,
    )
