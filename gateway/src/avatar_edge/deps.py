"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, Any

from fastapi import Depends, Request

from avatar_shared.ttl_cache import TtlCache

Document = TtlCache[dict[str, Any]]


async def _health(request: Request) -> Document:
    return request.state.health


async def _openapi(request: Request) -> Document:
    return request.state.openapi


HealthDep = Annotated[Document, Depends(_health)]
OpenApiDep = Annotated[Document, Depends(_openapi)]
