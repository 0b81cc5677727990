"""Health probes every service serves (outside the /api prefix, so the gateway never routes
them from outside):

- `GET /healthz`: the process is alive (the gateway's load-balancer check).
- `GET /readyz`: Redis answers; 503 otherwise.
- `GET /upstreamz`: the state of the upstreams this service speaks to (LLM, GPT-SoVITS, ...),
  each "healthy", "unhealthy" or "disabled" (not configured). Informational: an upstream that
  is down does not make the service unready, because its other endpoints still work.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from avatar_shared.errors import error_response
from avatar_shared.redis_pool import RedisDep
from avatar_shared.state import BaseState, lifespan_state

Status = Literal["healthy", "unhealthy", "disabled"]
UpstreamCheck = Callable[[httpx.AsyncClient], Awaitable[Status]]

HEALTHY: Status = "healthy"
UNHEALTHY: Status = "unhealthy"
DISABLED: Status = "disabled"


async def probe_url(
    client: httpx.AsyncClient, url: str, accept: Callable[[httpx.Response], bool] | None = None
) -> Status:
    """GET `url`; healthy when it answers and `accept` (default: any status below 500) agrees."""
    if not url:
        return DISABLED
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return UNHEALTHY
    ok = accept(response) if accept else response.status_code < 500
    return HEALTHY if ok else UNHEALTHY


async def bounded(check: Awaitable[Status], timeout_s: float) -> Status:
    try:
        return await asyncio.wait_for(check, timeout_s)
    except (TimeoutError, httpx.HTTPError):
        return UNHEALTHY


def health_router(
    service: str, upstream_checks: Mapping[str, UpstreamCheck], timeout_s: float
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"success": True, "data": {"service": service, "status": "alive"}}

    @router.get("/readyz")
    async def readyz(redis: RedisDep) -> JSONResponse:
        try:
            # redis-py types async commands as "Awaitable[T] | T"
            await asyncio.wait_for(redis.ping(), timeout_s)  # type: ignore[arg-type]
        except (RedisError, TimeoutError, OSError):
            return error_response(503, "not_ready", f"{service}: Redis is unreachable.")
        return JSONResponse({"success": True, "data": {"service": service, "status": "ready"}})

    @router.get("/upstreamz")
    async def upstreamz(request: Request) -> dict[str, object]:
        client = lifespan_state(request, BaseState)["http"]
        names = list(upstream_checks)
        results = await asyncio.gather(
            *(bounded(upstream_checks[name](client), timeout_s) for name in names)
        )
        return {"success": True, "data": dict(zip(names, results, strict=True))}

    return router
