from fastapi import FastAPI

from avatar_gen3d.routes import router
from avatar_gen3d.settings import Gen3dSettings
from avatar_gen3d.upstreams import reachable_check
from avatar_shared.app import create_service_app


def create_app(settings: Gen3dSettings | None = None) -> FastAPI:
    settings = settings or Gen3dSettings()
    return create_service_app(
        service="gen3d",
        title="Avatar Forge gen3d",
        description="Turns a picture into a 3D avatar (GLB) in a background job.",
        settings=settings,
        routers=[router],
        upstream_checks={
            "gen3d": reachable_check(settings.gen3d_base_url),
            "style": reachable_check(settings.style_base_url),
        },
    )
