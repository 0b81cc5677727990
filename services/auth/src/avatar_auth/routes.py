from fastapi import APIRouter

from avatar_auth.schemas import User
from avatar_shared.errors import ERROR_RESPONSES, not_built

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)


@router.get("/google/login", summary="Redirect to Google's sign-in")
async def google_login() -> None:
    not_built("GET /api/auth/google/login")


@router.get("/google/callback", summary="Complete Google sign-in; set the access_token cookie")
async def google_callback() -> None:
    not_built("GET /api/auth/google/callback")


@router.get("/me", response_model=User)
async def me() -> User:
    not_built("GET /api/auth/me")


@router.post("/logout", summary="Delete the access_token cookie and redirect to the frontend")
async def logout() -> None:
    not_built("POST /api/auth/logout")
