from collections.abc import AsyncIterator
from contextlib import suppress

from fastapi import APIRouter, FastAPI, Request
from redis.exceptions import RedisError

from avatar_gen3d.adoption import router as adoption_router
from avatar_gen3d.backends.health import gen3d_check, reachable_check
from avatar_gen3d.deps import Gen3dState
from avatar_gen3d.jobs import open_queues
from avatar_gen3d.metrics import GEN3D_QUEUE
from avatar_gen3d.routes import router as gen3d_router
from avatar_gen3d.service import Gen3dService
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.app import create_service_app
from avatar_shared.body_limit import BodySizeLimitMiddleware
from avatar_shared.state import BaseState, lifespan_state


def create_app(settings: Gen3dSettings | None = None) -> FastAPI:
    settings = settings or Gen3dSettings()
    queues = open_queues(settings)

    async def gen3d_state(base: BaseState) -> AsyncIterator[Gen3dState]:
        for queue in queues.values():
            await queue.connect()
        try:
            gen3d = Gen3dService(settings, base["redis"], queues)
            await gen3d.recover()
            yield Gen3dState(gen3d=gen3d)
        finally:
            for queue in queues.values():
                with suppress(RedisError, OSError):  # stopping while Redis is gone is fine
                    await queue.disconnect()

    upstream_checks = {
        "gen3d": gen3d_check(settings, queues[settings.gen3d_backend]),
        "style": reachable_check(settings.style_base_url),
    }

    async def scrape(request: Request) -> None:
        gen3d = lifespan_state(request, Gen3dState)["gen3d"]
        depth = await gen3d.queue_depth()
        GEN3D_QUEUE.labels("queued").set(depth.queued)
        GEN3D_QUEUE.labels("running").set(depth.running)

    router = APIRouter()
    router.include_router(gen3d_router)
    router.include_router(adoption_router)  # a peer's call at sign-in, not public
    app = create_service_app(
        "gen3d",
        settings,
        router,
        state=gen3d_state,
        upstream_checks=upstream_checks,
        scrape=scrape,
    )
    # Uploads are refused as they stream in, at MAX_UPLOAD_BYTES, never read whole first.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    return app
