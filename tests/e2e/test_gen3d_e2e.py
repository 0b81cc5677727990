"""3D generation end to end under the real stack: the picture goes up through the gateway,
the gen3d worker process (a separate process, as `make run` starts it) makes the GLB, and
the owner downloads it. GPU (hunyuan3d) jobs are a signed-in user's."""

import asyncio
import io
import json
import os
import signal
import time

import httpx
import pytest
import trimesh
from PIL import Image, ImageDraw

from tests.e2e.oidc_browser import browser, sign_in


def portrait(size: int = 1024) -> bytes:
    image = Image.new("RGB", (size, size), (240, 240, 236))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 4, size // 8, 3 * size // 4, 7 * size // 8), fill=(190, 90, 70))
    draw.rectangle((size // 3, size // 3, 2 * size // 3, size // 2), fill=(40, 40, 120))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def submit(client: httpx.AsyncClient, **options: object) -> dict:
    files = {"image": ("me.png", portrait(), "image/png")}
    data = {"options": json.dumps(options)} if options else {}
    response = await client.post("/api/generate", files=files, data=data)
    assert response.status_code == 202, response.text
    return response.json()["data"]


async def follow(client: httpx.AsyncClient, status_url: str, limit_s: float = 60) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = (await client.get(status_url)).json()["data"]
        seen.append(status)
        if status["status"] in ("completed", "failed"):
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"not finished in {limit_s}s: {seen[-1]}")


@pytest.fixture
async def signed_in(stack):
    """A client of the gateway signed in (the GPU backend is for signed-in users only)."""
    async with browser(stack) as client:
        await sign_in(client, "gpu-user")
        yield client


async def test_a_picture_becomes_a_textured_glb_for_its_owner_only(stack, gateway):
    job = await submit(gateway, resolution=512)
    seen = await follow(gateway, job["status_url"])
    final = seen[-1]
    assert final["status"] == "completed", final
    assert final["progress"] == 100 and final["error"] is None
    assert final["result_url"] == f"/api/generate/result/{job['job_id']}.glb"
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress)
    steps = {s["current_step"] for s in seen if s["status"] == "processing"}
    assert any(0 < p < 100 for p in progress) and steps <= {
        "이미지 분석 중...", "배경 제거 중...", "3D 메쉬 생성 중...", "텍스처 적용 중...",
        "GLB 파일 저장 중...", None,
    }  # fmt: skip

    glb = await gateway.get(final["result_url"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.headers.get("etag")
    part = await gateway.get(final["result_url"], headers={"Range": "bytes=0-11"})
    assert part.status_code == 206 and part.content == glb.content[:12]
    (mesh,) = trimesh.load(io.BytesIO(glb.content), file_type="glb").geometry.values()
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0 and mesh.is_watertight
    assert mesh.visual.material.baseColorTexture.size == (1024, 1024)
    assert (mesh.bounds[1] - mesh.bounds[0]).max() <= 1.0

    preview = await gateway.get(f"/api/generate/result/{job['job_id']}.png")
    assert preview.headers["content-type"] == "image/png"

    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as stranger:
        for path in (job["status_url"], final["result_url"]):
            assert (await stranger.get(path)).status_code == 404


async def test_a_worker_killed_mid_job_leaves_no_job_stuck(stack, signed_in):
    gateway = signed_in
    job = await submit(gateway, backend="hunyuan3d")  # the emulator takes 3 s per model
    deadline = time.monotonic() + 20
    while (await gateway.get(job["status_url"])).json()["data"]["progress"] < 40:
        assert time.monotonic() < deadline, "the job never reached the 3D server"
        await asyncio.sleep(0.05)
    worker = next(c for c in stack.supervisor.children if c.name.startswith("gen3d-worker"))
    os.killpg(worker.process.pid, signal.SIGKILL)  # mid-job, no chance to clean up
    worker.process.wait()
    stack.supervisor.children.remove(worker)
    stack.start_gen3d_workers(1)

    final = (await follow(gateway, job["status_url"], limit_s=60))[-1]
    assert final["status"] == "completed", final
    glb = await gateway.get(final["result_url"])
    assert trimesh.load(io.BytesIO(glb.content), file_type="glb").geometry


async def test_a_running_job_is_cancelled_and_its_worker_stops(signed_in):
    gateway = signed_in
    job = await submit(gateway, backend="hunyuan3d")  # the emulator takes 3 s per model
    deadline = time.monotonic() + 20
    while (await gateway.get(job["status_url"])).json()["data"]["status"] != "processing":
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.05)
    cancelled = await gateway.delete(f"/api/generate/{job['job_id']}")
    assert cancelled.status_code == 200, cancelled.text
    await asyncio.sleep(4)  # past the time the model would have taken
    final = (await gateway.get(job["status_url"])).json()["data"]
    assert (final["status"], final["error"], final["result_url"]) == (
        "failed",
        "취소되었습니다.",
        None,
    )
    result = await gateway.get(f"/api/generate/result/{job['job_id']}.glb")
    assert result.status_code == 404  # the worker stopped: no model was written
