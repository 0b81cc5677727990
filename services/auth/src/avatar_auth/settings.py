from pydantic import Field, SecretStr

from avatar_shared.settings import ServiceSettings

GOOGLE_DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"


class AuthSettings(ServiceSettings):
    frontend_url: str = "http://localhost:3000"
    """Where sign-in and logout redirect back to; `next` paths must stay on its origin."""
    oidc_discovery_url: str = GOOGLE_DISCOVERY_URL
    """OpenID provider's discovery document (Google's, or the demo provider of `make demo`)."""
    google_client_id: str = ""
    """OAuth client id at the provider; empty: sign-in is disabled (anonymous use still works)."""
    google_client_secret: SecretStr = SecretStr("")
    """OAuth client secret at the provider."""
    oidc_timeout_s: float = Field(10.0, gt=0)
    """Longest wait for the OpenID provider (discovery, token, keys)."""
    login_timeout_s: int = Field(600, gt=0)
    """How long a started sign-in may take before its state expires."""
    sign_in_starts_per_min: int = Field(30, gt=0)
    """Sign-ins one client address (an IPv6 client's /64) may start a minute; past it 429 with
    Retry-After. Each start keeps its state in Redis for LOGIN_TIMEOUT_S. Room for an office
    behind one NAT signing in at once."""
    signing_keys_file: str = ""
    """Private JWK Set (RS256) that signs access tokens: the first key signs, later ones (the
    previous keys) still verify. Empty: a key made at start-up (refused when ENV=production)."""
    token_lifetime_s: int = Field(7 * 24 * 3600, gt=0)
    """Lifetime of an access token and of its cookie."""

    @property
    def redirect_uri(self) -> str:
        """Registered at the provider; from settings, never from request headers."""
        return self.public_base_url.rstrip("/") + "/api/auth/google/callback"

    @property
    def sign_in_enabled(self) -> bool:
        return bool(self.google_client_id)
