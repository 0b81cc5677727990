"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from avatar_gen3d.service import Gen3dService
from avatar_shared.state import lifespan_state


class Gen3dState(TypedDict):
    """What the gen3d lifespan adds to the base state (see app.py)."""

    gen3d: Gen3dService


async def _gen3d(request: Request) -> Gen3dService:
    return lifespan_state(request, Gen3dState)["gen3d"]


Gen3dDep = Annotated[Gen3dService, Depends(_gen3d)]
