from collections.abc import AsyncIterator
from typing import TypedDict

from fastapi import FastAPI

from avatar_gen3d.backends.health import reachable_check
from avatar_gen3d.routes import router
from avatar_gen3d.service import Gen3dService
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.app import BaseState, create_service_app


class Gen3dState(TypedDict):
    gen3d: Gen3dService


async def gen3d_state(_: BaseState) -> AsyncIterator[Gen3dState]:
    yield Gen3dState(gen3d=Gen3dService())


def create_app(settings: Gen3dSettings | None = None) -> FastAPI:
    settings = settings or Gen3dSettings()
    upstream_checks = {
        "gen3d": reachable_check(settings.gen3d_base_url),
        "style": reachable_check(settings.style_base_url),
    }
    return create_service_app(
        "gen3d", settings, router, state=gen3d_state, upstream_checks=upstream_checks
    )
