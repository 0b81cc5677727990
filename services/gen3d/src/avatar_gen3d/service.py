"""3D generation: an uploaded picture becomes a job in its backend's queue, a worker makes it
a GLB.

Signing in (`adopt`, avatar_shared.adoption): an anonymous id's finished jobs become the
account's, each in two steps, in this order:
1. one script (`JobBook.move`) changes its owner, its listing and its retention entry (now
   keyed by the account's folder, its bytes charged to the account) and lists it in
   `gen3d:moving`;
2. its folder is renamed to the account's (one atomic rename), and it leaves `gen3d:moving`.
A crash between the two leaves a job the account owns whose folder still has the anonymous
id's name: it is listed in `gen3d:moving`, so the next read of its result, the next
adoption call and the next start of the API rename it (`_finish_move`); the account reads it
either way (its status at once, its files from that rename on), and the anonymous id reads
it no more. The other order could leave the anonymous id owning a job whose folder has gone.
Retention may remove the folder at any moment: before step 1 the script finds no entry (the
job moves, its files do not: retention is removing them); between the two, it removes the
account's (not yet renamed) folder from its index, and the rename that follows sees that and
removes the folder it just renamed.
"""

import asyncio
import logging
import shutil
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job

from avatar_gen3d.errors import (
    InvalidOptions,
    JobFinished,
    JobNotFound,
    QueueFull,
    ResultNotFound,
    SignInRequired,
    TooManyJobs,
)
from avatar_gen3d.files import JobFolder, job_folders
from avatar_gen3d.images import as_png, checked_picture
from avatar_gen3d.jobs import (
    CANCELLED,
    CLAIM_GRACE_S,
    FINAL,
    FUNCTION,
    KEPT,
    MOVED,
    NOT_THEIRS,
    STATUS_OF,
    FairQueue,
    JobBook,
    holder_of,
    job_settings,
    places_of,
    progress_of,
)
from avatar_gen3d.retention import Retention
from avatar_gen3d.schemas import (
    Backend,
    Gen3dOptions,
    JobAccepted,
    JobPage,
    JobState,
    JobStatus,
    QueueDepth,
)
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.adoption import KindMoved
from avatar_shared.budget import Budget
from avatar_shared.pages import TIME, Page
from avatar_shared.rate import Caller, CallerRate

log = logging.getLogger("avatar.gen3d")
# What one job's records take in Redis, charged to the global "jobs" budget: saq's record
# (options, progress, notes: about 1 KB), our owner, listing, places and cancel keys, and
# Redis's overhead per key. A fixed charge: a job's records do not grow with its picture.
JOB_RECORD_BYTES = 4096


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


def rename_folder(old: Path, new: Path) -> None:
    """`old` becomes `new` in one step; nothing when `old` is gone (renamed already)."""
    new.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError):
        old.rename(new)


def holder(caller: Caller) -> str:
    """Whose share a job uses (its turn in the queue, its files' bytes): a signed-in user's
    own; anonymous callers share their client address's, since their ids cost nothing."""
    return caller.address_key or caller.user_id


class Gen3dService:
    def __init__(
        self, settings: Gen3dSettings, redis: Redis, queues: dict[Backend, FairQueue]
    ) -> None:
        self.settings, self.queues = settings, queues
        self.book = JobBook(redis, settings.job_ttl_s)
        self.retention = Retention(
            redis,
            settings.gen3d_max_bytes,
            settings.gen3d_max_bytes_per_user,
            settings.gen3d_max_age_s,
        )
        limits = (settings.gen3d_rate_per_hour, settings.gen3d_rate_per_hour_per_address)
        self.rate = CallerRate(redis, "gen3d", limits, 3600, "3D jobs", "an hour")
        self.budget = Budget(redis, "jobs", settings.redis_maxmemory_bytes)
        # Each decode holds a picture in memory (4 bytes a pixel and more): bounded per process.
        self._decoding = asyncio.Semaphore(settings.decode_concurrency)

    async def submit(
        self, caller: Caller, image: IO[bytes], options_json: str | None
    ) -> JobAccepted:
        """Checks that cost nothing come first (options, backend, room, rates), then the
        picture is decoded; anything refused after its room was taken gives it back: a
        refused upload leaves nothing behind (but its count in the rates)."""
        options = parse_options(options_json)
        backend = self.backend_for(caller, options)
        queue = self.queues[backend]
        if await queue.count("queued") >= queue.cap:  # early: the enqueue checks it again
            raise QueueFull()
        share = holder(caller)
        job_id = await self._take_room(caller, share)
        folder = JobFolder(self.settings.assets_dir, caller.user_id, job_id)
        reserved = False
        try:
            # Counted once there is room: a picture refused later counts (decoding it was
            # the cost), a submission refused for want of room does not.
            await self.rate.hit(caller)
            # Charged per job until its records expire (they are never deleted sooner).
            await self.budget.reserve(job_id, JOB_RECORD_BYTES, time.time() + self._lifetime())
            reserved = True
            size = await self._store_input(image, folder)
            await self.retention.kept(folder.path, size, share, finished=False)
            await self.book.add(job_id, caller.user_id)
            kwargs = {
                "user_id": caller.user_id,
                "job_id": job_id,
                "holder": share,
                # The backend as decided here: a worker's own default must not change it.
                "options": options.model_copy(update={"backend": backend}).model_dump(),
            }
            await queue.enqueue(FUNCTION, key=job_id, **job_settings(self.settings), **kwargs)
        except BaseException:
            with suppress(RedisError, OSError):
                await self.book.finished(job_id, caller.user_id, share)
                if reserved:
                    await self.budget.release(job_id, JOB_RECORD_BYTES)
                await self.retention.remove(folder.path)
            await asyncio.to_thread(shutil.rmtree, folder.path, True)
            raise
        return JobAccepted(
            job_id=job_id,
            status_url=f"/api/generate/status/{job_id}",
            estimated_time=await self._estimate(backend),
        )

    def _lifetime(self) -> float:
        """How long a job's records may live at most: every attempt run to its timeout, then
        JOB_TTL_S once it ended."""
        settings = self.settings
        return settings.job_timeout_s * settings.job_retries + settings.job_ttl_s

    def backend_for(self, caller: Caller, options: Gen3dOptions) -> Backend:
        """The GPU backend is for signed-in users only (hours of GPU are not for free ids);
        an anonymous caller's job that names no backend goes to relief."""
        if caller.identity.signed_in:
            return options.backend or self.settings.gen3d_backend
        if options.backend == "hunyuan3d":
            raise SignInRequired()
        return "relief"

    async def _store_input(self, image: IO[bytes], folder: JobFolder) -> int:
        """Checks the upload by decoding it (reduced) and keeps it as PNG; its bytes."""
        async with self._decoding:
            return await asyncio.to_thread(self._decode_and_store, image, folder)

    def _decode_and_store(self, image: IO[bytes], folder: JobFolder) -> int:
        settings = self.settings
        picture = checked_picture(image, settings.max_image_pixels, settings.max_picture_side)
        png = as_png(picture)
        folder.write("input.png", png)
        return len(png)

    async def status(self, job_id: str, user_id: str) -> JobStatus:
        await self._owned(job_id, user_id)
        job = await self._job(job_id)
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
        for job_id, job in zip(ids, await self._jobs(ids), strict=True):
            if job is None:  # its record expired (JOB_TTL_S)
                await self.book.forget(job_id, user_id)
                continue
            page.append(status_of(job, cancelled=job_id in cancelled))
        return JobPage(jobs=page, next_cursor=TIME.next_of(listed))

    async def cancel(self, job_id: str, user_id: str) -> JobStatus:
        """A waiting job leaves its queue; a running one is stopped by its worker within about
        a second. Either way it ends as `failed` with the error "취소되었습니다." and its files
        go. (A job already sent to the Hunyuan3D server runs there to its end: that server
        cannot cancel; only our worker stops waiting for it.)"""
        await self._owned(job_id, user_id)
        job = await self._job(job_id)
        if job is None or job.status in FINAL or await self.book.cancelled([job_id]):
            raise JobFinished(job_id)
        await self.book.cancel(job_id)
        assert job.queue is not None  # set by the queue that read it
        await job.queue.abort(job, error="cancelled")
        await self.book.finished(job_id, user_id, holder_of(job))
        # Ended by the abort (it waited for its turn or for a retry): no worker holds it to
        # clean up after it. A running job's worker removes its files as it stops.
        if job.status in FINAL:
            await self.retention.remove(JobFolder(self.settings.assets_dir, user_id, job_id).path)
        return status_of(job, cancelled=True)

    async def result(self, job_id: str, user_id: str, kind: str) -> Path:
        await self._owned(job_id, user_id)
        path = JobFolder(self.settings.assets_dir, user_id, job_id).result(kind)
        if not await asyncio.to_thread(path.is_file):
            # Adopted, and its folder not renamed yet (a crash halfway): renamed now.
            if (from_id := await self.book.moving_from(job_id)) is not None:
                await self._finish_move(job_id, from_id, user_id)
            if not await asyncio.to_thread(path.is_file):
                raise ResultNotFound(job_id)
        return path

    async def adopt(self, from_id: str, to: str) -> KindMoved:
        """At a sign-in: `from_id`'s finished jobs (completed or failed) become `to`'s, oldest
        first, each whole (see the module's docstring). A job not finished stays (its worker
        writes into the folder its arguments name), as does one whose files would pass
        GEN3D_MAX_BYTES_PER_USER of the account's: both are counted `kept`."""
        await self.finish_moves()
        ids = await self.book.every(from_id)
        cancelled = await self.book.cancelled(ids)
        moved = kept = 0
        for job_id, job in zip(ids, await self._jobs(ids), strict=True):
            if job is None:  # its record expired (JOB_TTL_S)
                await self.book.forget(job_id, from_id)
                continue
            if job.status not in FINAL:
                kept += 1
                continue
            old, new = self._folders(job_id, from_id, to)
            if job_id in cancelled:
                # Its files go (`cancel` removes them just after the abort ends the job):
                # removed now, so none can move out of that removal's way.
                await self.retention.remove(old)
            outcome = await self.book.move(
                job_id, from_id, to, (str(old), str(new)), self.retention.max_bytes_per_holder
            )
            if outcome == KEPT:
                kept += 1
            elif outcome != NOT_THEIRS:  # another call moved it meanwhile
                moved += 1
                if outcome == MOVED:
                    await self._finish_move(job_id, from_id, to)
        return KindMoved(moved=moved, kept=kept)

    async def finish_moves(self) -> None:
        """Renames the folders of adopted jobs that a crash left with their old name."""
        for job_id, from_id in (await self.book.moving()).items():
            to = await self.book.owner(job_id)
            if to is None:  # expired since
                await self.book.moved(job_id)
                continue
            await self._finish_move(job_id, from_id, to)

    def _folders(self, job_id: str, from_id: str, to: str) -> tuple[Path, Path]:
        """The job's folder as `from_id`'s, and as `to`'s."""
        assets = self.settings.assets_dir
        return JobFolder(assets, from_id, job_id).path, JobFolder(assets, to, job_id).path

    async def _finish_move(self, job_id: str, from_id: str, to: str) -> None:
        """Step 2 of an adoption: the folder renamed (by another replica already, perhaps)."""
        old, new = self._folders(job_id, from_id, to)
        await asyncio.to_thread(rename_folder, old, new)
        await self.book.moved(job_id)
        if not await self.retention.counts(new):  # retention removed it meanwhile
            await asyncio.to_thread(shutil.rmtree, new, True)

    async def queue_depth(self) -> QueueDepth:
        infos = [await queue.info() for queue in self.queues.values()]
        return QueueDepth(
            queued=sum(info["queued"] for info in infos),
            running=sum(info["active"] for info in infos),
            # Every worker process serves every backend (one saq worker for each).
            workers=max(len(info["workers"]) for info in infos),
        )

    async def recover(self) -> None:
        """At start: the retention index is rebuilt from the folders if Redis lost it. Best
        effort: a Redis that is down now does not stop the service from starting."""
        try:
            await self.finish_moves()
            if await self.retention.lost():
                folders = await asyncio.to_thread(job_folders, self.settings.assets_dir)
                await self.retention.rebuild(folders)
                if folders:
                    log.info("retention index rebuilt: %d job folders", len(folders))
        except RedisError as exc:
            log.warning("retention index not checked (Redis unavailable): %s", exc)

    async def _job(self, job_id: str) -> Job | None:
        for queue in self.queues.values():
            if (job := await queue.job(job_id)) is not None:
                return job
        return None

    async def _jobs(self, job_ids: list[str]) -> list[Job | None]:
        """Each job from whichever queue holds it (one read per queue)."""
        found: list[Job | None] = [None] * len(job_ids)
        for queue in self.queues.values():
            for i, job in enumerate(await queue.jobs(job_ids)):
                found[i] = found[i] or job
        return found

    async def _owned(self, job_id: str, user_id: str) -> None:
        """404, not 403, to others: job ids are not confirmed to strangers."""
        if await self.book.owner(job_id) != user_id:
            raise JobNotFound(job_id)

    async def _take_room(self, caller: Caller, share: str) -> str:
        """A new job id with its place among the user's unfinished jobs (and, for anonymous
        callers, among their address's), or 429. A full set is looked through (once) for
        places that should have been given back before the caller is refused: the usual
        submission costs one script, not a read of every job in the sets."""
        places = places_of(caller.user_id, share)
        caps = {places[0]: self.settings.max_queued_jobs_per_user}
        if len(places) > 1:
            caps[places[1]] = self.settings.max_queued_jobs_per_address
        job_id = str(uuid.uuid4())
        full = await self.book.claim(job_id, caps)
        if full is not None and await self._free_ended_places(full):
            full = await self.book.claim(job_id, caps)
        if full is not None:
            raise TooManyJobs(caps[full], of_address=full != places[0])
        return job_id

    async def _free_ended_places(self, key: str) -> bool:
        """Places of jobs that ended without giving theirs back (their worker died), or of
        submissions that died halfway, are free again; whether there were any."""
        taken = await self.book.active(key)
        jobs = await self._jobs([job_id for job_id, _ in taken])
        freed = False
        for (job_id, taken_at), job in zip(taken, jobs, strict=True):
            lost = job is None and time.time() - taken_at > CLAIM_GRACE_S
            if lost or (job is not None and job.status in FINAL):
                await self.book.free(key, job_id)
                freed = True
        return freed

    async def _estimate(self, backend: Backend) -> int:
        """Seconds: the jobs ahead and this one (already queued), at the backend's recent
        pace, one at a time per worker."""
        info = await self.queues[backend].info()  # counts and workers in one read
        waiting = info["queued"] + info["active"]
        rounds = max(1, -(-waiting // max(1, len(info["workers"]))))  # ceil: this job's round
        return max(1, round(await self.book.typical_duration(backend) * rounds))
