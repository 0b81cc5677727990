"""Helpers for the gen3d tests (plain functions and constants; the fixtures are in
conftest.py): pictures made on the spot, and a real character card's picture.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

import io
from pathlib import Path

from PIL import Image, ImageDraw

SERAPHINA = (
    Path(__file__).resolve().parents[4] / "shared" / "testdata" / "cards" / "default_Seraphina.png"
)


def picture(size: tuple[int, int] = (320, 240), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A subject (a red ellipse) on a plain light background."""
    image = Image.new(mode, size, (235, 235, 235, 0) if mode == "RGBA" else (235, 235, 235))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 5, h // 6, 4 * w // 5, 5 * h // 6), fill=(200, 60, 50, 255))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()
