"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from avatar_auth.service import AuthService
from avatar_shared.identity import IdentityResolver
from avatar_shared.state import lifespan_state


class AuthState(TypedDict):
    """What auth's lifespan adds to the base state (see app.py)."""

    auth: AuthService
    identity: IdentityResolver  # auth verifies with the keys it holds, not over HTTP


async def _auth(request: Request) -> AuthService:
    return lifespan_state(request, AuthState)["auth"]


AuthDep = Annotated[AuthService, Depends(_auth)]
