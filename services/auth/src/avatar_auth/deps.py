"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_auth.service import AuthService


async def _auth(request: Request) -> AuthService:
    return request.state.auth


AuthDep = Annotated[AuthService, Depends(_auth)]
