"""The relief backend: a closed, textured solid of the picture's subject, as a GLB that a
glTF reader loads."""

import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from avatar_gen3d.backends.relief import ReliefBackend, foreground
from avatar_gen3d.errors import BadInput
from avatar_gen3d.schemas import Gen3dOptions

from .helpers import SERAPHINA, picture


async def make(data: bytes, **options) -> tuple[trimesh.Trimesh, list[str], bytes]:
    steps: list[str] = []

    async def report(stage: tuple[int, str]) -> None:
        steps.append(stage[1])

    image = Image.open(io.BytesIO(data))
    model = await ReliefBackend().generate(image, Gen3dOptions(**options), report)
    scene = trimesh.load(io.BytesIO(model.glb), file_type="glb")
    (mesh,) = scene.geometry.values()
    return mesh, steps, model.preview_png


@pytest.mark.parametrize("source", ["drawn", "seraphina"])
async def test_the_glb_is_a_closed_textured_solid(source):
    data = picture((400, 300)) if source == "drawn" else SERAPHINA.read_bytes()
    mesh, steps, preview = await make(data, resolution=128)
    assert len(mesh.vertices) > 1000 and len(mesh.faces) > 1000
    assert mesh.is_watertight and mesh.volume > 0
    texture = mesh.visual.material.baseColorTexture
    assert texture is not None and texture.size == Image.open(io.BytesIO(data)).size
    low, high = mesh.bounds
    assert (high - low)[:2].max() <= 1.0 and 0 < (high - low)[2] <= 0.5  # a relief, not a block
    assert steps == [
        "이미지 분석 중...", "배경 제거 중...", "3D 메쉬 생성 중...", "텍스처 적용 중...",
        "GLB 파일 저장 중...",
    ]  # fmt: skip
    assert Image.open(io.BytesIO(preview)).mode == "RGBA"


def test_the_subject_is_cut_out_by_alpha_or_by_the_border_colour():
    drawn = Image.open(io.BytesIO(picture((200, 200))))
    by_border = foreground(drawn)
    transparent = Image.open(io.BytesIO(picture((200, 200), mode="RGBA")))
    by_alpha = foreground(transparent)
    for mask in (by_border, by_alpha):
        assert mask[100, 100] and not mask[5, 5]  # the ellipse's middle, a corner
        assert 0.3 < mask.mean() < 0.6  # about the ellipse's share of the picture


async def test_without_texture_the_model_is_plain():
    mesh, _, _ = await make(picture(), texture=False, resolution=64)
    assert getattr(mesh.visual.material, "baseColorTexture", None) is None
    assert np.isfinite(mesh.vertices).all()


async def test_a_picture_of_thin_lines_only_is_bad_input_not_an_empty_model():
    lines = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    for x in range(0, 200, 10):
        lines.putpixel((x, 100), (255, 0, 0, 255))
    out = io.BytesIO()
    lines.save(out, format="PNG")
    with pytest.raises(BadInput):
        await make(out.getvalue())
