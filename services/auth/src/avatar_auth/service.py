"""Sign-in with Google (OIDC), the users, and the JWTs every service verifies.

Not built yet (the auth issue builds it): each operation answers 501 and says which endpoint
is missing.
"""

from avatar_auth.schemas import User
from avatar_shared.errors import not_built


class AuthService:
    async def login(self) -> None:
        not_built("GET /api/auth/google/login")

    async def callback(self) -> None:
        not_built("GET /api/auth/google/callback")

    async def me(self) -> User:
        not_built("GET /api/auth/me")

    async def logout(self) -> None:
        not_built("POST /api/auth/logout")
