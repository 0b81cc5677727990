"""Helpers for the gen3d tests (plain functions and constants; the fixtures are in
conftest.py): pictures made on the spot, and a real character card's picture.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from avatar_gen3d.jobs import open_queues
from avatar_gen3d.worker import build_workers
from avatar_shared.app import open_http_client

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


@asynccontextmanager
async def running_worker(settings, redis) -> AsyncIterator[None]:
    """A worker process's saq workers (one per backend), in this process."""
    queues = open_queues(settings)
    for queue in queues.values():
        await queue.connect()
    async with open_http_client() as http:
        workers = build_workers(settings, redis, queues, http)
        tasks = [asyncio.create_task(worker.start()) for worker in workers]
        try:
            yield
        finally:
            for worker in workers:
                await worker.stop()
            for task in tasks:
                task.cancel()
            for queue in queues.values():
                await queue.disconnect()


async def until_finished(client: httpx.AsyncClient, job_id: str, tries: int = 200) -> dict:
    for _ in range(tries):
        status = (await client.get(f"/api/generate/status/{job_id}")).json()["data"]
        if status["status"] in ("completed", "failed"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")
