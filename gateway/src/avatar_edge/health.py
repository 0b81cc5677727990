"""`GET /api/health`: the aggregate state of the backend, its services and upstreams.

Every check runs concurrently and is bounded by `health_timeout_s`, so the answer comes in
well under two seconds even when everything is down. Each service reports the upstreams it
speaks to (`/upstreamz`); an upstream whose service does not answer counts as unhealthy.
The edge reuses a result for `health_cache_s` seconds (see app.py).
"""

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_edge.settings import EdgeSettings
from avatar_shared.health import HEALTHY, UNHEALTHY, Status, bounded, probe_url
from avatar_shared.peers import PeerClient, PeerError
from avatar_shared.timestamps import utc_now

# The upstream names API.md's health document always carries, and ours beyond it: sign_in
# ("disabled" when no OpenID provider is configured, as under a plain `make run`).
CONTRACT_UPSTREAMS = ("llm", "tts", "gen3d", "style")
OUR_UPSTREAMS = ("sign_in",)


async def _redis_status(redis: Redis) -> Status:
    try:
        await redis.ping()  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
    except (RedisError, OSError):
        return UNHEALTHY
    return HEALTHY


async def _upstreams_of(
    client: httpx.AsyncClient, service: str, base_url: str, timeout_s: float
) -> dict[str, Status]:
    """What the service reports of its upstreams; nothing when it cannot say in time, so
    its upstreams count as unhealthy."""
    try:
        async with asyncio.timeout(timeout_s):  # the whole exchange, not each read
            return dict(await PeerClient(client, service, base_url).get("/upstreamz"))
    except (PeerError, TimeoutError, ValueError, TypeError):
        return {}


async def _gen3d_queue(
    client: httpx.AsyncClient, base_url: str, timeout_s: float
) -> dict[str, int] | None:
    """How much 3D work waits (gen3d's own count); None when gen3d cannot say in time."""
    try:
        async with asyncio.timeout(timeout_s):
            return dict(await PeerClient(client, "gen3d", base_url).get("/api/generate/queue"))
    except (PeerError, TimeoutError, ValueError, TypeError):
        return None


async def check_everything(
    settings: EdgeSettings, client: httpx.AsyncClient, redis: Redis
) -> dict[str, Any]:
    services = settings.service_urls()
    timeout = settings.health_timeout_s
    alive = [bounded(probe_url(client, f"{url}/healthz"), timeout) for url in services.values()]
    upstreams = [_upstreams_of(client, name, url, timeout) for name, url in services.items()]
    gen3d_queue = _gen3d_queue(client, services["gen3d"], timeout)
    redis_status, queue, alive_status, upstream_reports = await asyncio.gather(
        bounded(_redis_status(redis), timeout),
        gen3d_queue,
        asyncio.gather(*alive),
        asyncio.gather(*upstreams),
    )
    service_status = dict(zip(services, alive_status, strict=True))
    reported: dict[str, Status] = {}
    for upstream_report in upstream_reports:
        reported.update(upstream_report)
    everything_up = redis_status == HEALTHY and all(s == HEALTHY for s in service_status.values())
    return {
        "backend": HEALTHY if everything_up else UNHEALTHY,
        **{name: reported.get(name, UNHEALTHY) for name in CONTRACT_UPSTREAMS + OUR_UPSTREAMS},
        "redis": redis_status,
        "gen3d_queue": queue,
        "services": service_status,
        "timestamp": utc_now(),
    }
