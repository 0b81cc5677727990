from fastapi import APIRouter

from avatar_auth.deps import AuthDep
from avatar_auth.schemas import User
from avatar_shared.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)


@router.get("/google/login", summary="Redirect to Google's sign-in")
async def google_login(auth: AuthDep) -> None:
    await auth.login()


@router.get("/google/callback", summary="Complete Google sign-in; set the access_token cookie")
async def google_callback(auth: AuthDep) -> None:
    await auth.callback()


@router.get("/me", response_model=User)
async def me(auth: AuthDep) -> User:
    return await auth.me()


@router.post("/logout", summary="Delete the access_token cookie and redirect to the frontend")
async def logout(auth: AuthDep) -> None:
    await auth.logout()
