"""gen3d fixtures: the API in-process over a real Redis, pictures made on the spot."""

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from avatar_gen3d.app import create_app
from avatar_gen3d.settings import Gen3dSettings

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


@pytest.fixture
def settings(redis_url, tmp_path) -> Gen3dSettings:
    return Gen3dSettings(redis_url=redis_url, assets_dir=str(tmp_path / "assets"))


@pytest.fixture
async def gen3d(app_client, settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings)) as client:
        yield client
