"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_gen3d.service import Gen3dService


async def _gen3d(request: Request) -> Gen3dService:
    return request.state.gen3d


Gen3dDep = Annotated[Gen3dService, Depends(_gen3d)]
