"""`python -m avatar_gen3d.worker`: a worker process of the 3D job queue (`make run` starts
one; more scale horizontally, each taking jobs from the same Redis queue).

A job reads its input, runs the backend, and writes `model.glb` and `preview.png`, reporting
`progress` and `current_step` as it goes. Those reports double as heartbeats; between them a
ticker keeps sending heartbeats, so only a worker that died (or hung) goes silent, and saq's
sweep then hands its job to another attempt. Bad input fails at once; anything else is
retried with backoff until the job's attempts run out. A job a sign-in promised to an
account moves to it as it ends (`after_job`; see `service`'s docstring).

`python -m avatar_gen3d.worker --alive` is a container's health check: it exits 0 while a
worker of this host (container, pod) is listed by the queue, that is, keeps reporting to
Redis (saq refreshes the listing every 10 s; it lapses a minute after the last report).
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from PIL import Image
from redis.asyncio import Redis
from saq import Job, Worker

from avatar_gen3d.backends.base import SAVING, Backend, BackendFailed, BackendGaveUp
from avatar_gen3d.backends.hunyuan3d import Hunyuan3DBackend
from avatar_gen3d.backends.relief import ReliefBackend
from avatar_gen3d.errors import BadInput, JobCancelled
from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import FINAL, FUNCTION, FairQueue, JobBook, job_lifetime_s, open_queues
from avatar_gen3d.moves import Mover
from avatar_gen3d.retention import Retention
from avatar_gen3d.schemas import Backend as BackendName
from avatar_gen3d.schemas import Gen3dOptions
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.app import open_http_client
from avatar_shared.logs import configure_logging
from avatar_shared.redis_pool import open_redis

logger = logging.getLogger("avatar.gen3d.worker")
FAILED_TO_MAKE = "3D 모델을 만들지 못했습니다."


async def generate(
    ctx: dict[str, Any],
    *,
    user_id: str,
    job_id: str,
    options: dict[str, Any],
    holder: str | None = None,  # absent from jobs of earlier versions: their user's
    site: str | None = None,  # an anonymous IPv6 caller's (absent from earlier versions)
) -> str:
    job: Job = ctx["job"]
    settings: Gen3dSettings = ctx["settings"]
    book: JobBook = ctx["book"]
    retention: Retention = ctx["retention"]
    holder = holder or user_id
    chosen = capped(Gen3dOptions.model_validate(options), settings)
    backend: Backend = ctx["backends"][chosen.backend or settings.gen3d_backend]
    folder = JobFolder(settings.assets_dir, user_id, job_id)
    started = time.monotonic()
    notes = JobNotes(job)
    report = reporter(job, book)
    await book.renew_promises(job_lifetime_s(settings))  # this one's, or one still waiting
    try:
        if await written_before(folder, book, settings.assets_dir, job_id, user_id):
            # An attempt that saq's sweep started beside one that went on to finish (see
            # run()), or after one that died having written it: the job is done, and its
            # input is gone; unless a cancel marked it before its result was marked in.
            if not await book.completing(job_id):
                raise JobCancelled()
            return job_id
        async with heartbeats(job, settings.job_heartbeat_s / 3):
            picture = await read_input(folder)
            model = await backend.generate(picture, chosen, report, notes)
            await report((100, SAVING[1]))  # a cancel that came meanwhile wins
            await asyncio.to_thread(folder.write, "model.glb", model.glb)
            await asyncio.to_thread(folder.write, "preview.png", model.preview_png)
            await asyncio.to_thread(folder.drop_input)
            # Its result is in: from this mark on a cancel answers that it finished. A cancel
            # that marked it first (after the last report's look) wins: its files go.
            if not await book.completing(job_id):
                raise JobCancelled()
    except JobCancelled:
        job.retries = 0  # its owner has the answer already ("취소되었습니다.")
        await book.finished(job_id, user_id, holder, site)
        await retention.remove(folder.path)
        raise
    except asyncio.CancelledError:
        # saq's abort stops a cancelled job in the middle of a step, before its next report
        # sees the mark; without the mark it is the worker shutting down (the job is retried).
        if await book.cancelled([job_id]):
            await retention.remove(folder.path)
        raise
    except (BadInput, BackendGaveUp) as exc:
        job.retries = 0  # nothing another attempt could change, or worse
        await fail(job, book, user_id, holder, site, str(exc))
        await retention.remove(folder.path)
        raise
    except Exception as exc:
        if job.attempts >= job.retries:  # the last attempt: say why it ended
            why = str(exc) if isinstance(exc, BackendFailed) else FAILED_TO_MAKE
            await fail(job, book, user_id, holder, site, why)
            await retention.remove(folder.path)
        raise
    await job.update(meta={**(job.meta or {}), "progress": 100, "step": None})
    await book.took(backend.name, time.monotonic() - started)
    await book.finished(job_id, user_id, holder, site)
    await retention.kept(folder.path, await asyncio.to_thread(folder.size), holder)
    return job_id


async def written_before(
    folder: JobFolder, book: JobBook, assets_dir: str, job_id: str, user_id: str
) -> bool:
    """Whether an earlier attempt wrote the job's result (the preview, written last): in
    its folder, or in its owner's now, if a sign-in moved the job since it ended."""
    if await asyncio.to_thread(folder.result("png").is_file):
        return True
    owner = await book.owner(job_id)
    if owner is None or owner == user_id:
        return False
    return await asyncio.to_thread(JobFolder(assets_dir, owner, job_id).result("png").is_file)


def capped(options: Gen3dOptions, settings: Gen3dSettings) -> Gen3dOptions:
    """The options within MAX_MESH_RESOLUTION (a model's size grows with its square)."""
    resolution = min(options.resolution, settings.max_mesh_resolution)
    return options.model_copy(update={"resolution": resolution})


class JobNotes:
    """A backend's notes, kept in the job's record (`meta`): saq saves the record as it is
    when it retries the job, and its sweep reads it back from Redis, so every later attempt
    sees them."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def get(self, name: str) -> Any:
        return (self.job.meta or {}).get("notes", {}).get(name)

    async def keep(self, **values: Any) -> None:
        meta = self.job.meta or {}
        await self.job.update(meta={**meta, "notes": {**meta.get("notes", {}), **values}})


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
        meta = job.meta or {}
        reached = int(meta.get("progress", 0))
        await job.update(meta={**meta, "progress": max(percent, reached), "step": step})

    return report


async def fail(
    job: Job, book: JobBook, user_id: str, holder: str, site: str | None, message: str
) -> None:
    await job.update(meta={**(job.meta or {}), "error": message})
    await book.finished(job.key, user_id, holder, site)


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


LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
# glibc's, or None under another C library (musl, macOS).
MALLOC_TRIM: Callable[[int], int] | None = getattr(LIBC, "malloc_trim", None)
MALLOPT: Callable[[int, int], int] | None = getattr(LIBC, "mallopt", None)
M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 128 * 1024


def pin_mmap_threshold() -> None:
    """Large buffers (a job's pictures, mesh arrays, GLB) mapped on their own, always: glibc
    otherwise raises the threshold after the first one is freed, and later ones land in its
    heaps, which fragment and are seldom handed back whole. Mapped, each goes back to the
    system the moment it is freed."""
    if MALLOPT is not None:
        MALLOPT(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


async def after_job(ctx: dict[str, Any]) -> None:
    """saq's after_process hook, run once an attempt is over and the job's record says how:
    a job that ended moves to the account a sign-in promised it to, if any (a crash before
    that is finished later: see `service`'s docstring); then its memory goes back."""
    job: Job = ctx["job"]
    mover: Mover = ctx["mover"]
    try:
        book: JobBook = ctx["book"]
        await book.renew_promises(job_lifetime_s(ctx["settings"]))
        if job.status in FINAL:
            await mover.keep_promise(job)
    finally:
        await release_memory(ctx)


async def release_memory(ctx: dict[str, Any]) -> None:
    """Gives the memory a job freed back to the system (after each job: `after_job`).

    A relief job allocates large buffers (decoded pictures, mesh arrays, the GLB) in the
    default executor's threads and frees them when it ends, but glibc keeps freed memory in
    its heaps for reuse, and once a freed large buffer raises its mmap threshold later ones
    come from those heaps too: fragmented, they are seldom handed back whole, so the
    worker's resident memory creeps up job after job (bench/soak.py saw +23%). Trimming
    after each job returns the free pages at once (a few ms against a job's seconds).
    """
    if MALLOC_TRIM is not None:
        await asyncio.to_thread(MALLOC_TRIM, 0)


def sweep_every_s(settings: Gen3dSettings) -> int:
    """How often jobs whose worker went silent are looked for: every few seconds, not
    saq's 60."""
    return max(2, settings.job_heartbeat_s // 2)


def build_workers(
    settings: Gen3dSettings,
    redis: Redis,
    queues: dict[BackendName, FairQueue],
    http: httpx.AsyncClient,
) -> list[Worker[Any]]:
    """One saq worker per backend, each on its backend's queue with its own concurrency: a
    relief job takes a core, a hunyuan3d job a place on the GPU server."""
    book = JobBook(redis, settings.job_ttl_s)
    retention = Retention(
        redis, settings.gen3d_max_bytes, settings.gen3d_max_bytes_per_user, settings.gen3d_max_age_s
    )
    hunyuan = Hunyuan3DBackend(
        http,
        settings.gen3d_base_url,
        settings.hunyuan_deadline_s,
        typical_s=lambda: book.typical_duration("hunyuan3d"),
        face_count=settings.hunyuan_face_count,
        texture=settings.hunyuan_texture,
    )

    mover = Mover(book, retention, settings.assets_dir)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"], ctx["book"], ctx["retention"] = settings, book, retention
        ctx["mover"] = mover
        ctx["backends"] = {"relief": ReliefBackend(), "hunyuan3d": hunyuan}

    concurrency: dict[BackendName, int] = {
        "relief": settings.worker_concurrency,
        "hunyuan3d": settings.hunyuan_concurrency,
    }
    workers: list[Worker[Any]] = []
    for backend, queue in queues.items():
        worker: Worker[Any] = Worker(
            queue,
            # Named after its host, so `--alive` finds its own container's workers (no ":"
            # in it: saq reads the id back as the text after the last one).
            id=f"{os.getpid()}-{backend}@{socket.gethostname()}",
            functions=[(FUNCTION, generate)],
            concurrency=concurrency[backend],
            startup=startup,
            after_process=after_job,
            # saq's PartialTimersDict (total=False) still requires the keys it inherits
            timers={"sweep": sweep_every_s(settings)},  # type: ignore[arg-type]
        )
        worker.SIGNALS = []  # each would take the signals from the last: run() stops them all
        workers.append(worker)
    return workers


async def run() -> None:
    settings = Gen3dSettings()
    configure_logging("gen3d-worker", settings.log_level)
    pin_mmap_threshold()
    queues = open_queues(settings)
    upstream = httpx.Timeout(30.0, connect=3.0)
    async with (
        open_redis(settings.redis_url, settings.redis_timeout_s) as redis,
        open_http_client(upstream) as http,
    ):
        for queue in queues.values():
            await queue.connect()
            # saq sweeps once as it starts, at the moment its first dequeue has moved a job
            # to the active list but not yet marked it active, and then aborts and retries
            # that healthy job (tobymao/saq#277). Sweeping here first, before any dequeue,
            # takes the sweep lock for one period, so that start-up sweep finds nothing.
            await queue.sweep(sweep_every_s(settings))
        logger.info("gen3d worker starting")
        workers = build_workers(settings, redis, queues, http)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        running = [asyncio.create_task(worker.start()) for worker in workers]
        await stop.wait()
        for worker in workers:
            await worker.stop()
        await asyncio.gather(*running, return_exceptions=True)


async def alive(settings: Gen3dSettings, host: str) -> bool:
    """Whether every queue lists a worker of `host` (the --alive health check)."""
    queues = open_queues(settings)
    try:
        for queue in queues.values():
            await queue.connect()
            workers = (await queue.info())["workers"]
            if not any(worker_id.endswith(f"@{host}") for worker_id in workers):
                return False
        return True
    finally:
        for queue in queues.values():
            await queue.disconnect()


if __name__ == "__main__":
    if sys.argv[1:] == ["--alive"]:
        sys.exit(0 if asyncio.run(alive(Gen3dSettings(), socket.gethostname())) else 1)
    asyncio.run(run())
