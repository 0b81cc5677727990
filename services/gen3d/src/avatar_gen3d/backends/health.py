"""How the gen3d service tells whether 3D work can happen (for /upstreamz and /api/health)."""

import httpx
from redis.exceptions import RedisError
from saq import Queue

from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.health import HEALTHY, UNHEALTHY, Status, UpstreamCheck, probe_url


def reachable_check(base_url: str) -> UpstreamCheck:
    async def check(client: httpx.AsyncClient) -> Status:
        return await probe_url(client, base_url)

    return check


def gen3d_check(settings: Gen3dSettings, queue: Queue) -> UpstreamCheck:
    """Healthy when a worker has reported in the last ~11 s (saq's worker info) and the
    configured backend answers (relief needs nothing beyond the worker)."""

    async def check(client: httpx.AsyncClient) -> Status:
        try:
            workers = (await queue.info())["workers"]
        except (RedisError, OSError):
            return UNHEALTHY
        if not workers:
            return UNHEALTHY
        if settings.gen3d_backend == "hunyuan3d":
            return await probe_url(client, settings.gen3d_base_url)
        return HEALTHY

    return check
