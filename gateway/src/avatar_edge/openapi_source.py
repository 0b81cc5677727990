"""Builds the merged OpenAPI document from each service's own (plus the edge's routes).

A service that does not answer within FETCH_TIMEOUT_S is left out (and logged) rather than
failing the whole document; such an incomplete document is kept only briefly.
"""

import asyncio
import logging
from typing import Any

import httpx

from avatar_edge.openapi_merge import merge_openapi
from avatar_edge.settings import EdgeSettings
from avatar_shared.registry import APPS

logger = logging.getLogger("avatar.edge.openapi")
FETCH_TIMEOUT_S = 2.0
INCOMPLETE_CACHE_S = 5.0  # soon enough for a late service to show up
TITLE = "Avatar Forge API"
# The gateway does not route these (AppSpec.internal_paths): they are no part of the public API.
INTERNAL_PATHS = frozenset(path for spec in APPS for path in spec.internal_paths)
DESCRIPTION = (
    "Every external endpoint of the Avatar Forge backend, merged from the chat, tts, "
    "characters, gen3d and auth services. Errors use the envelope "
    '`{"success": false, "error": {"code", "message"}}`.'
)


async def _fetch(client: httpx.AsyncClient, service: str, url: str) -> dict[str, Any] | None:
    try:
        response = await client.get(f"{url}/openapi.json", timeout=FETCH_TIMEOUT_S)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("openapi of %s unavailable: %r", service, exc)
        return None


def _public(document: dict[str, Any]) -> dict[str, Any]:
    """The service's document without the paths only its peers may call."""
    paths = document.get("paths", {})
    return {**document, "paths": {p: item for p, item in paths.items() if p not in INTERNAL_PATHS}}


async def build_document(
    settings: EdgeSettings, client: httpx.AsyncClient, edge_doc: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """The merged document and how long to keep it."""
    services = settings.service_urls()
    fetched = await asyncio.gather(*(_fetch(client, s, u) for s, u in services.items()))
    docs = {s: _public(d) for s, d in zip(services, fetched, strict=True) if d is not None}
    merged = merge_openapi({"edge": edge_doc, **docs}, title=TITLE, description=DESCRIPTION)
    merged["servers"] = [{"url": "/"}]
    complete = len(docs) == len(services)
    return merged, settings.openapi_cache_s if complete else INCOMPLETE_CACHE_S
