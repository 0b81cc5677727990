from pydantic import Field

from avatar_shared.settings import PeerUrls, SharedSettings


class EdgeSettings(SharedSettings, PeerUrls):
    health_timeout_s: float = Field(1.5, gt=0)
    """Bound on each check behind /api/health."""
    health_cache_s: float = Field(3.0, ge=0)
    """How long /api/health reuses a result."""
    openapi_cache_s: float = Field(60.0, ge=0)
    """How long the merged OpenAPI document is reused."""
