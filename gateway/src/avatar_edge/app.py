"""The edge: the gateway's own small app for /, the merged docs, the aggregate health and the
playground page.

Traefik also sends it every path no service claims, so unknown paths get the error envelope.
"""

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from avatar_edge.deps import EdgeState
from avatar_edge.health import check_everything
from avatar_edge.openapi_source import build_document
from avatar_edge.routes import (
    DOCS_ASSETS_DIR,
    DOCS_ASSETS_PATH,
    PLAYGROUND_DIR,
    PLAYGROUND_PATH,
    router,
)
from avatar_edge.settings import EdgeSettings
from avatar_shared.app import create_service_app
from avatar_shared.state import BaseState
from avatar_shared.ttl_cache import TtlCache


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    settings = settings or EdgeSettings()
    edge_doc = get_openapi(title="edge", version="0.1.0", routes=router.routes)

    async def edge_state(base: BaseState) -> AsyncIterator[EdgeState]:
        http, redis = base["http"], base["redis"]

        async def health() -> tuple[dict[str, Any], float]:
            return await check_everything(settings, http, redis), settings.health_cache_s

        yield EdgeState(
            health=TtlCache(health),
            openapi=TtlCache(lambda: build_document(settings, http, edge_doc)),
        )

    app = create_service_app("edge", settings, router, state=edge_state, own_docs=False)
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(DOCS_ASSETS_DIR)), name="docs-assets")
    playground = StaticFiles(directory=str(PLAYGROUND_DIR), html=True)
    app.mount(PLAYGROUND_PATH, playground, name="playground")
    return app
