"""The hunyuan3d backend against the Hunyuan3D-2 emulator over HTTP: a result, a server that
is down, and a job the server never finishes (its own deadline)."""

import io

import httpx
import pytest
import trimesh
from PIL import Image

from avatar_devstack.ports import free_port
from avatar_emulators.hunyuan3d import Hunyuan3DConfig, create_app
from avatar_emulators.server import serve_in_thread
from avatar_gen3d.backends.base import BackendFailed
from avatar_gen3d.backends.hunyuan3d import NO_RESULT, UNREACHABLE, Hunyuan3DBackend
from avatar_gen3d.schemas import Gen3dOptions

from .helpers import picture


async def typical() -> float:
    return 1.0


async def run(url: str, image: Image.Image, deadline_s: float = 10) -> tuple[bytes, list]:
    reports: list[tuple[int, str]] = []

    async def report(stage: tuple[int, str]) -> None:
        reports.append(stage)

    async with httpx.AsyncClient(trust_env=False) as http:
        backend = Hunyuan3DBackend(http, url, deadline_s, typical, poll_s=0.05)
        model = await backend.generate(image, Gen3dOptions(texture=True), report)
    return model.glb, reports


async def test_a_result_comes_back_as_a_glb_with_progress_estimated():
    with serve_in_thread(create_app(Hunyuan3DConfig(latency_s=0.5))) as url:
        glb, reports = await run(url, Image.open(io.BytesIO(picture())))
    (mesh,) = trimesh.load(io.BytesIO(glb), file_type="glb").geometry.values()
    assert len(mesh.faces) > 0
    percents = [p for p, _ in reports]
    assert percents == sorted(percents) and any(40 < p < 90 for p in percents)


async def test_a_server_that_is_down_is_a_retryable_failure():
    with pytest.raises(BackendFailed, match=UNREACHABLE):
        await run(f"http://127.0.0.1:{free_port()}", Image.open(io.BytesIO(picture())))


async def test_a_job_the_server_never_finishes_ends_at_our_deadline():
    failing = create_app(Hunyuan3DConfig(fail=True))  # its thread raises: "processing" forever
    with serve_in_thread(failing) as url, pytest.raises(BackendFailed, match=NO_RESULT):
        await run(url, Image.open(io.BytesIO(picture())), deadline_s=0.5)
