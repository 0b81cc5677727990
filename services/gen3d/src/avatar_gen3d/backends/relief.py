"""The `relief` backend: a textured 3D relief of the picture's subject, on the CPU, with no
model weights.

1. Foreground: the alpha channel when the picture has one that cuts anything out; else the
   pixels that differ from a background colour estimated from the picture's borders.
2. Height: a dome from the distance to the silhouette (a blurred mask), plus a little relief
   from luminance, smoothed.
3. Mesh: the front surface over the foreground grid, a flat back, and side walls along the
   silhouette, so the solid is closed; the picture is the texture of every face.
4. A binary glTF 2.0 (GLB) written by trimesh, its texture a JPEG (a PNG of a photo is
   several times larger) no larger than the stored input (MAX_PICTURE_SIDE).
"""

import asyncio
import io
from typing import cast

import numpy as np
import trimesh
from PIL import Image, ImageFilter

from avatar_gen3d.backends.base import (
    ANALYZING,
    MESHING,
    REMOVING_BACKGROUND,
    SAVING,
    TEXTURING,
    Model,
    Notes,
    Report,
)
from avatar_gen3d.errors import BadInput
from avatar_gen3d.schemas import Gen3dOptions

BACKGROUND_DISTANCE = 48  # RGB distance from the border colour that counts as subject
DEPTH = 0.35  # dome height against the picture's longer side (which spans 1.0)
DETAIL = 0.04  # luminance relief on top of the dome
THICKNESS = 0.02  # the back sits this far behind the silhouette's edge


def foreground(image: Image.Image) -> np.ndarray:
    """A boolean mask of the subject."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int16)
    alpha = rgba[..., 3]
    if (alpha < 128).any() and (alpha >= 128).any():
        return alpha >= 128
    rgb = rgba[..., :3]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.sqrt(((rgb - background) ** 2).sum(axis=-1))
    mask = distance > BACKGROUND_DISTANCE
    # Smooth speckles away; a picture with no separable background is all subject.
    smoothed = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(5))
    mask = np.asarray(smoothed) >= 128
    return mask if mask.mean() > 0.02 else np.ones_like(mask)


def height_field(image: Image.Image, mask: np.ndarray) -> np.ndarray:
    """Heights (in units of the longer side) for every pixel; 0 outside the subject."""
    size = max(mask.shape)
    blur = max(2, size // 12)
    dome = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))
    dome_h = np.sqrt(np.asarray(dome, dtype=np.float32) / 255.0)
    luminance = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(2)), np.float32)
    heights = DEPTH * dome_h + DETAIL * (luminance / 255.0)
    return np.where(mask, heights, 0.0).astype(np.float32)


def without_pinches(cells: np.ndarray) -> np.ndarray:
    """Fills one cell wherever two cells touch only at a corner: such a corner would be
    shared by four side walls, and the solid would not be closed (2-manifold)."""
    cells = cells.copy()
    while True:
        a, b = cells[:-1, :-1], cells[:-1, 1:]
        c, d = cells[1:, :-1], cells[1:, 1:]
        falling, rising = a & d & ~b & ~c, b & c & ~a & ~d
        if not (falling.any() or rising.any()):
            return cells
        cells[:-1, 1:] |= falling  # an empty cell of each pinched square is filled
        cells[:-1, :-1] |= rising


def build_mesh(heights: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, uv) of the closed relief: front, back and side walls."""
    rows, cols = mask.shape
    scale = 1.0 / max(rows, cols)
    ys, xs = np.mgrid[0:rows, 0:cols]
    front = np.stack([xs * scale, (rows - 1 - ys) * scale, heights], axis=-1).reshape(-1, 3)
    back = front.copy()
    back[:, 2] = -THICKNESS
    uv = np.stack([xs / max(cols - 1, 1), 1 - ys / max(rows - 1, 1)], axis=-1).reshape(-1, 2)

    index = np.arange(rows * cols).reshape(rows, cols)
    a, b = index[:-1, :-1], index[:-1, 1:]
    c, d = index[1:, :-1], index[1:, 1:]
    inside = without_pinches(mask[:-1, :-1] & mask[:-1, 1:] & mask[1:, :-1] & mask[1:, 1:])
    a, b, c, d = a[inside], b[inside], c[inside], d[inside]
    if len(a) == 0:
        raise BadInput("그림에서 모델로 만들 형체를 찾지 못했습니다.")  # e.g. only thin lines
    front_faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    n = rows * cols
    back_faces = front_faces[:, ::-1] + n

    # Side walls along the silhouette: every edge used by exactly one front face.
    edges = np.concatenate([front_faces[:, [0, 1]], front_faces[:, [1, 2]], front_faces[:, [2, 0]]])
    boundary = edges[trimesh.grouping.group_rows(np.sort(edges, axis=1), require_count=1)]
    u, v = boundary[:, 0], boundary[:, 1]
    walls = np.concatenate([np.stack([u, v + n, v], 1), np.stack([u, u + n, v + n], 1)])

    vertices = np.concatenate([front, back])
    faces = np.concatenate([front_faces, back_faces, walls])
    return vertices, faces, np.concatenate([uv, uv])


def textured_glb(
    picture: Image.Image, mesh_parts: tuple[np.ndarray, np.ndarray, np.ndarray], texture: bool
) -> bytes:
    vertices, faces, uv = mesh_parts
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    used = np.unique(faces)  # the order remove_unreferenced_vertices keeps
    mesh.remove_unreferenced_vertices()
    colours = picture.convert("RGB")
    colours.format = "JPEG"  # trimesh writes a texture marked JPEG as JPEG, any other as PNG
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=colours if texture else None,
        baseColorFactor=None if texture else [200, 200, 200, 255],
    )
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv[used], material=material)
    return cast(bytes, mesh.export(file_type="glb"))  # GLB is binary: bytes, never str or dict


def cut_out_png(small: Image.Image, mask: np.ndarray) -> bytes:
    cut_out = small.copy()
    cut_out.putalpha(Image.fromarray((mask * 255).astype(np.uint8)))
    out = io.BytesIO()
    cut_out.save(out, format="PNG")
    return out.getvalue()


class ReliefBackend:
    """Each step runs in a thread, so the worker's event loop keeps the heartbeat going."""

    name = "relief"

    async def generate(
        self,
        picture: Image.Image,
        options: Gen3dOptions,
        report: Report,
        notes: Notes | None = None,  # nothing to keep across attempts: each starts afresh
    ) -> Model:
        await report(ANALYZING)
        image = picture.convert("RGBA")
        small = image.copy()
        small.thumbnail((options.resolution, options.resolution), Image.Resampling.LANCZOS)
        await report(REMOVING_BACKGROUND)
        mask = await asyncio.to_thread(foreground, small)
        await report(MESHING)
        heights = await asyncio.to_thread(height_field, small, mask)
        parts = await asyncio.to_thread(build_mesh, heights, mask)
        await report(TEXTURING)
        glb = await asyncio.to_thread(textured_glb, image, parts, options.texture)
        await report(SAVING)
        return Model(glb=glb, preview_png=await asyncio.to_thread(cut_out_png, small, mask))
