from avatar_shared.settings import SharedSettings


class Gen3dSettings(SharedSettings):
    gen3d_base_url: str = ""
    """Image-to-3D server; empty means not configured (health: disabled)."""
    style_base_url: str = ""
    """Image style server; empty means not configured (health: disabled)."""
