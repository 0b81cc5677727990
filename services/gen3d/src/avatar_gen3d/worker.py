"""`python -m avatar_gen3d.worker`: a worker process of the 3D job queue (`make run` starts
one; more scale horizontally, each taking jobs from the same Redis queue).

A job reads its input, runs the backend, and writes `model.glb` and `preview.png`, reporting
`progress` and `current_step` as it goes. Those reports double as heartbeats; between them a
ticker keeps sending heartbeats, so only a worker that died (or hung) goes silent, and saq's
sweep then hands its job to another attempt. Bad input fails at once; anything else is
retried with backoff until the job's attempts run out.

`python -m avatar_gen3d.worker --alive` is a container's health check: it exits 0 while a
worker of this host (container, pod) is listed by the queue, that is, keeps reporting to
Redis (saq refreshes the listing every 10 s; it lapses a minute after the last report).
"""

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from PIL import Image
from redis.asyncio import Redis
from saq import Job, Queue, Worker

from avatar_gen3d.backends.base import Backend, BackendFailed
from avatar_gen3d.backends.hunyuan3d import Hunyuan3DBackend
from avatar_gen3d.backends.relief import ReliefBackend
from avatar_gen3d.errors import BadInput, JobCancelled
from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import FUNCTION, JobBook, open_queue
from avatar_gen3d.schemas import Gen3dOptions
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.app import open_http_client
from avatar_shared.logs import configure_logging
from avatar_shared.redis_pool import open_redis

logger = logging.getLogger("avatar.gen3d.worker")
FAILED_TO_MAKE = "3D 모델을 만들지 못했습니다."


async def generate(
    ctx: dict[str, Any], *, user_id: str, job_id: str, options: dict[str, Any]
) -> str:
    job: Job = ctx["job"]
    settings: Gen3dSettings = ctx["settings"]
    book: JobBook = ctx["book"]
    chosen = Gen3dOptions.model_validate(options)
    backend: Backend = ctx["backends"][chosen.backend or settings.gen3d_backend]
    folder = JobFolder(settings.assets_dir, user_id, job_id)
    started = time.monotonic()
    report = reporter(job, book)
    try:
        async with heartbeats(job, settings.job_heartbeat_s / 3):
            model = await backend.generate(await read_input(folder), chosen, report)
            await report((100, "GLB 파일 저장 중..."))  # a cancel that came meanwhile wins
            await asyncio.to_thread(folder.write, "model.glb", model.glb)
            await asyncio.to_thread(folder.write, "preview.png", model.preview_png)
    except JobCancelled:
        job.retries = 0  # its owner has the answer already ("취소되었습니다.")
        await book.finished(job_id, user_id)
        raise
    except BadInput as exc:
        job.retries = 0  # nothing another attempt could change
        await fail(job, book, user_id, str(exc))
        raise
    except Exception as exc:
        if job.attempts >= job.retries:  # the last attempt: say why it ended
            why = str(exc) if isinstance(exc, BackendFailed) else FAILED_TO_MAKE
            await fail(job, book, user_id, why)
        raise
    await job.update(meta={"progress": 100, "step": None})
    await book.took(backend.name, time.monotonic() - started)
    await book.finished(job_id, user_id)
    return job_id


async def read_input(folder: JobFolder) -> Image.Image:
    try:
        picture = await asyncio.to_thread(Image.open, folder.input)
        await asyncio.to_thread(picture.load)
    except (OSError, ValueError) as exc:
        raise BadInput("입력 이미지를 읽을 수 없습니다.") from exc
    return picture


def reporter(job: Job, book: JobBook) -> Callable[[tuple[int, str]], Awaitable[None]]:
    """Progress for the job's status, and a heartbeat; it never goes back (a retried job
    starts its steps again from where the last attempt got). Each report also looks for a
    cancel: its owner's word, kept apart from saq's record that this very update rewrites."""

    async def report(stage: tuple[int, str]) -> None:
        if await book.cancelled([job.key]):
            raise JobCancelled()
        percent, step = stage
        reached = int((job.meta or {}).get("progress", 0))
        await job.update(meta={"progress": max(percent, reached), "step": step})

    return report


async def fail(job: Job, book: JobBook, user_id: str, message: str) -> None:
    await job.update(meta={**(job.meta or {}), "error": message})
    await book.finished(job.key, user_id)


@contextlib.asynccontextmanager
async def heartbeats(job: Job, every_s: float) -> AsyncIterator[None]:
    async def tick() -> None:
        while True:
            await asyncio.sleep(every_s)
            await job.update()

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()


def sweep_every_s(settings: Gen3dSettings) -> int:
    """How often jobs whose worker went silent are looked for: every few seconds, not
    saq's 60."""
    return max(2, settings.job_heartbeat_s // 2)


def build_worker(
    settings: Gen3dSettings, redis: Redis, queue: Queue, http: httpx.AsyncClient
) -> Worker[Any]:
    book = JobBook(redis, settings.job_ttl_s)
    hunyuan = Hunyuan3DBackend(
        http,
        settings.gen3d_base_url,
        settings.hunyuan_deadline_s,
        typical_s=lambda: book.typical_duration("hunyuan3d"),
    )

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"], ctx["book"] = settings, book
        ctx["backends"] = {"relief": ReliefBackend(), "hunyuan3d": hunyuan}

    return Worker(
        queue,
        # Named after its host, so `--alive` finds its own container's worker (no ":" in it:
        # saq reads the id back as the text after the last one).
        id=f"{os.getpid()}@{socket.gethostname()}",
        functions=[(FUNCTION, generate)],
        concurrency=settings.worker_concurrency,
        startup=startup,
        # saq's PartialTimersDict (total=False) still requires the keys it inherits
        timers={"sweep": sweep_every_s(settings)},  # type: ignore[arg-type]
    )


async def run() -> None:
    settings = Gen3dSettings()
    configure_logging("gen3d-worker", settings.log_level)
    queue = open_queue(settings)
    upstream = httpx.Timeout(30.0, connect=3.0)
    async with (
        open_redis(settings.redis_url, settings.redis_timeout_s) as redis,
        open_http_client(upstream) as http,
    ):
        await queue.connect()
        # saq sweeps once as it starts, at the moment its first dequeue has moved a job to
        # the active list but not yet marked it active, and then aborts and retries that
        # healthy job (tobymao/saq#277). Sweeping here first, before any dequeue, takes
        # the sweep lock for one period, so that start-up sweep finds nothing to do.
        await queue.sweep(sweep_every_s(settings))
        logger.info("gen3d worker starting")
        await build_worker(settings, redis, queue, http).start()  # until SIGINT/SIGTERM


async def alive(settings: Gen3dSettings, host: str) -> bool:
    """Whether the queue lists a worker of `host` (the --alive health check)."""
    queue = open_queue(settings)
    await queue.connect()
    try:
        workers = (await queue.info())["workers"]
    finally:
        await queue.disconnect()
    return any(worker_id.endswith(f"@{host}") for worker_id in workers)


if __name__ == "__main__":
    if sys.argv[1:] == ["--alive"]:
        sys.exit(0 if asyncio.run(alive(Gen3dSettings(), socket.gethostname())) else 1)
    asyncio.run(run())
