"""Helpers for the gen3d tests (plain functions and constants; the fixtures are in
conftest.py): pictures made on the spot, and a real character card's picture.

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories in the top-level tests/helpers.py. Tests never import from a conftest."""

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from PIL import Image, ImageDraw

from avatar_devstack.testing import with_lifespan_state
from avatar_gen3d.jobs import open_queues
from avatar_gen3d.worker import build_workers, sweep_every_s
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
        await queue.sweep(sweep_every_s(settings))  # as run() does first (tobymao/saq#277)
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


async def until_finished(
    client: httpx.AsyncClient, job_id: str, tries: int = 200, **kw: object
) -> dict:
    for _ in range(tries):
        status = (await client.get(f"/api/generate/status/{job_id}", **kw)).json()["data"]
        if status["status"] in ("completed", "failed"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


Clients = Callable[..., httpx.AsyncClient]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[Clients]:
    """The app with its lifespan run, and a maker of clients of it: `clients(address)` is a
    client whose requests come from that client address (each a browser of its own)."""
    async with app.router.lifespan_context(app) as state:
        served = with_lifespan_state(app, state or {})

        def clients(address: str = "127.0.0.1", **kwargs: object) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(
                app=served, raise_app_exceptions=False, client=(address, 40000)
            )
            return httpx.AsyncClient(transport=transport, base_url="http://test", **kwargs)

        yield clients


async def post(
    client: httpx.AsyncClient, data: bytes | None = None, options: dict | None = None, **kw
) -> httpx.Response:
    files = {"image": ("a.png", data if data is not None else picture(), "image/png")}
    form = {"options": json.dumps(options)} if options is not None else {}
    return await client.post("/api/generate", files=files, data=form, **kw)
