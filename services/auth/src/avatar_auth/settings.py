from pydantic import Field

from avatar_shared.settings import SharedSettings


class AuthSettings(SharedSettings):
    frontend_url: str = Field(
        "http://localhost:3000", description="Where sign-in and logout redirect back to."
    )
