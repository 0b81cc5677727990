from avatar_shared.settings import ServiceSettings


class Gen3dSettings(ServiceSettings):
    gen3d_base_url: str = ""
    """Image-to-3D server; empty means not configured (health: disabled)."""
    style_base_url: str = ""
    """Image style server; empty means not configured (health: disabled)."""
