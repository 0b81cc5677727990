"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, Any, TypedDict

from fastapi import Depends, Request

from avatar_shared.state import lifespan_state
from avatar_shared.ttl_cache import TtlCache

Document = TtlCache[dict[str, Any]]


class EdgeState(TypedDict):
    """What the edge's lifespan adds to the base state (see app.py)."""

    health: Document
    openapi: Document


async def _health(request: Request) -> Document:
    return lifespan_state(request, EdgeState)["health"]


async def _openapi(request: Request) -> Document:
    return lifespan_state(request, EdgeState)["openapi"]


HealthDep = Annotated[Document, Depends(_health)]
OpenApiDep = Annotated[Document, Depends(_openapi)]
