from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from avatar_auth.deps import AuthDep
from avatar_auth.errors import (
    SIGN_IN_FAILURES,
    InvalidNext,
    NotSignedIn,
    ProviderUnavailable,
    SignInDisabled,
)
from avatar_auth.schemas import User
from avatar_auth.service import NEXT_PATH
from avatar_shared.errors import COMMON, STORE, error_responses
from avatar_shared.identity import (
    CALLER_ERRORS,
    CallerIdentity,
    CrossOriginRefused,
)
from avatar_shared.rate import RATE_ERRORS
from avatar_shared.tokens import JWKS_PATH

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=error_responses(COMMON))
LOCATION = {"Location": {"description": "Where to go next", "schema": {"type": "string"}}}
REDIRECT: dict[int | str, dict[str, Any]] = {
    302: {"description": "Redirect (no body)", "headers": LOCATION}
}


@router.get(
    "/google/login",
    summary="Redirect to the provider's sign-in",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        **REDIRECT,
        **error_responses(InvalidNext, RATE_ERRORS, SignInDisabled, ProviderUnavailable, STORE),
    },
)
async def google_login(
    request: Request,
    auth: AuthDep,
    next_path: Annotated[
        str | None,
        # The pattern is checked by the service, whose refusal says what `next` may be.
        Query(
            alias="next",
            json_schema_extra={"pattern": NEXT_PATH},
            description="A path on the frontend to return to",
        ),
    ] = None,
) -> Response:
    return await auth.login(request, next_path)


@router.get(
    "/google/callback",
    summary="Complete sign-in: set the access_token cookie, redirect to the frontend",
    description="A failed sign-in redirects to `{FRONTEND_URL}/auth/callback?error=<code>`: "
    + "; ".join(f"`{code}`: {why}" for code, why in SIGN_IN_FAILURES.items())
    + "; or the provider's own OAuth error code (e.g. `access_denied`).",
    status_code=302,
    response_class=RedirectResponse,
    responses={**REDIRECT, **error_responses(SignInDisabled, STORE)},
)
async def google_callback(request: Request, auth: AuthDep) -> Response:
    return await auth.callback(request)


@router.get(
    "/me",
    response_model=User,
    summary="The signed-in user (401 when not signed in)",
    responses=error_responses(NotSignedIn, CALLER_ERRORS),
)
async def me(auth: AuthDep, identity: CallerIdentity) -> User:
    return await auth.me(identity)


@router.post(
    "/logout",
    summary="Sign out: revoke the token, delete the cookie, redirect to the frontend",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        303: {"description": "Redirect (no body)", "headers": LOCATION},
        **error_responses(CrossOriginRefused, STORE),
    },
)
async def logout(request: Request, auth: AuthDep) -> Response:
    return await auth.logout(request)


@router.get(JWKS_PATH.removeprefix("/api/auth"), summary="Public keys that verify access tokens")
async def jwks(auth: AuthDep) -> JSONResponse:
    body: dict[str, Any] = auth.jwks()
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})
