"""3D generation: an uploaded picture becomes a job in the queue, a worker makes it a GLB."""

import asyncio
import shutil
import time
import uuid
from pathlib import Path

from pydantic import ValidationError
from redis.asyncio import Redis
from saq import Job, Queue

from avatar_gen3d.errors import (
    InvalidOptions,
    JobFinished,
    JobNotFound,
    QueueFull,
    ResultNotFound,
    TooManyJobs,
)
from avatar_gen3d.files import JobFolder
from avatar_gen3d.images import as_png, checked_picture
from avatar_gen3d.jobs import (
    CANCELLED,
    CLAIM_GRACE_S,
    FINAL,
    FUNCTION,
    STATUS_OF,
    JobBook,
    job_settings,
    progress_of,
)
from avatar_gen3d.schemas import (
    Gen3dOptions,
    JobAccepted,
    JobPage,
    JobState,
    JobStatus,
    QueueDepth,
)
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.pages import TIME, Page


def parse_options(raw: str | None) -> Gen3dOptions:
    """The options field: a JSON object; empty, absent or JSON `null`: the defaults."""
    if raw is None or not raw.strip() or raw.strip() == "null":
        return Gen3dOptions()
    try:
        return Gen3dOptions.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidOptions(f"options: {problems}") from exc


def status_of(job: Job, cancelled: bool) -> JobStatus:
    """API.md's status object of a saq job; a cancelled job is `failed`, saying so."""
    progress = progress_of(job)
    status: JobState = "failed" if cancelled else STATUS_OF[job.status]
    finished = cancelled or job.status in FINAL
    return JobStatus(
        job_id=job.key,
        status=status,
        progress=progress.percent,
        current_step=None if finished else progress.step,
        result_url=f"/api/generate/result/{job.key}.glb" if status == "completed" else None,
        error=CANCELLED if cancelled else progress.error,
    )


class Gen3dService:
    def __init__(self, settings: Gen3dSettings, redis: Redis, queue: Queue) -> None:
        self.settings, self.queue = settings, queue
        self.book = JobBook(redis, settings.job_ttl_s)

    async def submit(self, user_id: str, image: bytes, options_json: str | None) -> JobAccepted:
        """Room is taken before the picture is decoded (decoding costs memory), and given
        back if anything after fails: a refused upload leaves nothing behind."""
        options = parse_options(options_json)
        job_id = await self._take_room(user_id)
        folder = JobFolder(self.settings.assets_dir, user_id, job_id)
        try:
            await asyncio.to_thread(self._store_input, image, folder)
            await self.book.add(job_id, user_id)
            kwargs = {"user_id": user_id, "job_id": job_id, "options": options.model_dump()}
            await self.queue.enqueue(FUNCTION, key=job_id, **job_settings(self.settings), **kwargs)
        except BaseException:
            await self.book.finished(job_id, user_id)
            await asyncio.to_thread(shutil.rmtree, folder.path, True)
            raise
        backend = options.backend or self.settings.gen3d_backend
        return JobAccepted(
            job_id=job_id,
            status_url=f"/api/generate/status/{job_id}",
            estimated_time=await self._estimate(backend),
        )

    def _store_input(self, image: bytes, folder: JobFolder) -> None:
        """Checks the upload by decoding it and keeps it as PNG (in a thread: CPU work)."""
        folder.write("input.png", as_png(checked_picture(image, self.settings.max_image_pixels)))

    async def status(self, job_id: str, user_id: str) -> JobStatus:
        await self._owned(job_id, user_id)
        job = await self.queue.job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return status_of(job, cancelled=bool(await self.book.cancelled([job_id])))

    async def jobs(self, user_id: str, before: float | None, limit: int) -> JobPage:
        """Newest first, from just before `before` (the cursor: the submission time of the
        previous page's last job)."""
        listed = Page.of(await self.book.page(user_id, before, limit + 1), limit)
        ids = listed.items
        cancelled = await self.book.cancelled(ids)
        page = []
        for job_id, job in zip(ids, await self.queue.jobs(ids), strict=True):
            if job is None:  # its record expired (JOB_TTL_S)
                await self.book.forget(job_id, user_id)
                continue
            page.append(status_of(job, cancelled=job_id in cancelled))
        return JobPage(jobs=page, next_cursor=TIME.next_of(listed))

    async def cancel(self, job_id: str, user_id: str) -> JobStatus:
        """A queued job leaves the queue; a running one is stopped by its worker within about
        a second. Either way it ends as `failed` with the error "취소되었습니다."."""
        await self._owned(job_id, user_id)
        job = await self.queue.job(job_id)
        if job is None or job.status in FINAL or await self.book.cancelled([job_id]):
            raise JobFinished(job_id)
        await self.book.cancel(job_id)
        await self.queue.abort(job, error="cancelled")
        await self.book.finished(job_id, user_id)
        return status_of(job, cancelled=True)

    async def result(self, job_id: str, user_id: str, kind: str) -> Path:
        await self._owned(job_id, user_id)
        path = JobFolder(self.settings.assets_dir, user_id, job_id).result(kind)
        if not await asyncio.to_thread(path.is_file):
            raise ResultNotFound(job_id)
        return path

    async def queue_depth(self) -> QueueDepth:
        info = await self.queue.info()
        return QueueDepth(
            queued=info["queued"], running=info["active"], workers=len(info["workers"])
        )

    async def _owned(self, job_id: str, user_id: str) -> None:
        """404, not 403, to others: job ids are not confirmed to strangers."""
        if await self.book.owner(job_id) != user_id:
            raise JobNotFound(job_id)

    async def _take_room(self, user_id: str) -> str:
        """A new job id with its place among the user's unfinished jobs, or 429; 503 when
        the whole queue is full (anonymous ids are free to make: this bounds them all)."""
        if await self.queue.count("queued") >= self.settings.max_waiting_jobs:
            raise QueueFull()
        places = await self.book.active(user_id)
        jobs = await self.queue.jobs([job_id for job_id, _ in places])
        for (job_id, taken_at), job in zip(places, jobs, strict=True):
            lost = job is None and time.time() - taken_at > CLAIM_GRACE_S
            if lost or (job is not None and job.status in FINAL):  # ended without saying so
                await self.book.finished(job_id, user_id)
        job_id = str(uuid.uuid4())
        if not await self.book.claim(job_id, user_id, self.settings.max_queued_jobs_per_user):
            raise TooManyJobs(self.settings.max_queued_jobs_per_user)
        return job_id

    async def _estimate(self, backend: str) -> int:
        """Seconds: the jobs ahead and this one (already queued), at the backend's recent
        pace, one at a time per worker."""
        info = await self.queue.info()  # counts and workers in one read
        waiting = info["queued"] + info["active"]
        rounds = max(1, -(-waiting // max(1, len(info["workers"]))))  # ceil: this job's round
        return max(1, round(await self.book.typical_duration(backend) * rounds))
