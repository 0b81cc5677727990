from avatar_shared.settings import SharedSettings


class AuthSettings(SharedSettings):
    frontend_url: str = "http://localhost:3000"
    """Where sign-in and logout redirect back to."""
