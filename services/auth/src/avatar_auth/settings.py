from pydantic import Field, SecretStr, field_validator

from avatar_shared.registry import SERVICES
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
    adopt_peers: str = "characters,chat,gen3d"
    """Services (comma-separated names) asked at each sign-in to move what the browser's
    anonymous id keeps to the account (POST /internal/accounts/adopt at each one's URL
    setting: CHARACTERS_URL, CHAT_URL, GEN3D_URL...); empty: nothing moves. A peer that fails
    is logged and the sign-in goes on."""
    adopt_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for each of ADOPT_PEERS at a sign-in (they are asked at once); past it the
    sign-in goes on, and what that peer did not move stays anonymous until the next one."""

    @field_validator("adopt_peers")
    @classmethod
    def _known_services(cls, value: str) -> str:
        known = {spec.name for spec in SERVICES}
        unknown = [name for name in _names(value) if name not in known]
        if unknown:
            raise ValueError(f"not services of the registry: {', '.join(unknown)}")
        return value

    @property
    def adopt_peer_urls(self) -> dict[str, str]:
        """Each of ADOPT_PEERS' base URL, by name."""
        urls = self.service_urls()
        return {name: urls[name] for name in _names(self.adopt_peers)}

    @property
    def redirect_uri(self) -> str:
        """Registered at the provider; from settings, never from request headers."""
        return self.public_base_url.rstrip("/") + "/api/auth/google/callback"

    @property
    def sign_in_enabled(self) -> bool:
        return bool(self.google_client_id)


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
