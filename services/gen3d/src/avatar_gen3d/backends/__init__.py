"""The image-to-3D servers the gen3d service speaks to (Hunyuan3D-2, a style server)."""
