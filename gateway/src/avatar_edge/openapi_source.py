"""Fetches each service's OpenAPI document and serves the merged one, cached.

A service that does not answer is left out of that one answer (and logged) rather than
failing the whole document; the next request tries it again.
"""

import asyncio
import logging
import time
from typing import Any

import httpx

from avatar_edge.openapi_merge import merge_openapi
from avatar_edge.settings import EdgeSettings

logger = logging.getLogger("avatar.edge.openapi")

TITLE = "Avatar Forge API"
DESCRIPTION = (
    "Every external endpoint of the Avatar Forge backend, merged from the chat, tts, "
    "characters, gen3d and auth services. Errors use the envelope "
    '`{"success": false, "error": {"code", "message"}}`.'
)


async def _fetch(client: httpx.AsyncClient, service: str, url: str) -> dict[str, Any] | None:
    try:
        response = await client.get(f"{url}/openapi.json")
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("openapi of %s unavailable: %r", service, exc)
        return None


class MergedOpenApi:
    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._expires = 0.0
        self._value: dict[str, Any] | None = None

    async def get(self, settings: EdgeSettings, client: httpx.AsyncClient) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() >= self._expires:
                self._value, complete = await self._build(settings, client)
                # An incomplete document is served but not kept, so a late service shows up.
                self._expires = time.monotonic() + (self._ttl_s if complete else 0)
            return self._value

    @staticmethod
    async def _build(
        settings: EdgeSettings, client: httpx.AsyncClient
    ) -> tuple[dict[str, Any], bool]:
        services = settings.service_urls()
        fetched = await asyncio.gather(*(_fetch(client, s, u) for s, u in services.items()))
        docs = {s: d for s, d in zip(services, fetched, strict=True) if d is not None}
        merged = merge_openapi(docs, title=TITLE, description=DESCRIPTION)
        merged["servers"] = [{"url": "/"}]
        return merged, len(docs) == len(services)
