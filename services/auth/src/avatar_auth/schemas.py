"""The user object of API.md (`GET /api/auth/me` returns it bare, without the envelope)."""

from pydantic import BaseModel


class User(BaseModel):
    id: str
    email: str
    username: str
    picture: str | None
    provider: str
