"""3D generation: an uploaded picture becomes a job in its backend's queue, a worker makes it
a GLB.

Signing in (`adopt`, avatar_shared.adoption): an anonymous id's jobs become the account's.
A finished one moves at once (`moves.Mover.move`), in two steps, in this order:
1. one script (`JobBook.move`) changes its owner, its listing and its retention entry (now
   keyed by the account's folder, its bytes charged to the account) and lists it in
   `gen3d:moving`;
2. its folder is renamed to the account's (one atomic rename), and it leaves `gen3d:moving`.
A crash between the two leaves a job the account owns whose folder still has the anonymous
id's name: it is listed in `gen3d:moving`, so the next read of its result, the next
adoption call and the next start of the API rename it (`finish_moves`); the account reads it
either way (its status at once, its files from that rename on), and the anonymous id reads
it no more. The other order could leave the anonymous id owning a job whose folder has gone.
Retention may remove the folder at any moment: before step 1 the script finds no entry (the
job moves, its files do not: retention is removing them); between the two, it removes the
account's (not yet renamed) folder from its index, and the rename that follows sees that and
removes the folder it just renamed.

A job still queued or running cannot move yet: its worker writes the folder its arguments
name. The sign-in promises it to the account instead (`gen3d:adopting`: job id -> account),
and whoever ends it makes the same two steps right after: the worker once saq has marked
the job final (its after-job hook), or `cancel` for a job that ends there. Until then the
job is the anonymous id's (its listing, its places, its folder, its bytes) and the account
reads it too (`_owned`). The account's bytes are checked at the move, as for a finished
job: one whose files would pass them stays the anonymous id's; step 1 settles the promise
either way. A crash between the job's end and step 1 (or saq's sweep failing a job whose
worker died, which no hook sees) leaves an ended job promised: the account's next read of
it, the next adoption call and the next start move it (`finish_moves`); a crash after step
1 is the case above. The sign-in promises first and reads the job again after: one that
ended meanwhile, its worker having looked for a promise before there was one, moves then.
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
from saq.job import Status

from avatar_gen3d.errors import (
    BackendNotConfigured,
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
    NOT_THEIRS,
    STATUS_OF,
    FairQueue,
    JobBook,
    holder_of,
    job_lifetime_s,
    job_settings,
    places_of,
    progress_of,
    submitter_of,
)
from avatar_gen3d.moves import Mover
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
# (options, progress, notes: about 1 KB), our owner, listing, places, cancel and completing
# keys, and Redis's overhead per key. A fixed charge: a job's records do not grow with its
# picture.
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
        self.mover = Mover(self.book, self.retention, settings.assets_dir)
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
        share = holder(caller)
        if await queue.full_for(share):  # early: the enqueue checks it again
            raise QueueFull()
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
        return job_lifetime_s(self.settings)

    def backend_for(self, caller: Caller, options: Gen3dOptions) -> Backend:
        """The GPU backend is for signed-in users only (hours of GPU are not for free ids);
        an anonymous caller's job that names no backend goes to relief. Without a GPU
        server configured it is refused at once (its jobs would fail after every attempt)."""
        if not caller.identity.signed_in:
            if options.backend == "hunyuan3d":
                raise SignInRequired()
            return "relief"
        backend = options.backend or self.settings.gen3d_backend
        if backend == "hunyuan3d" and not self.settings.gen3d_base_url:
            raise BackendNotConfigured()
        return backend

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
        go. When the cancel meets the job's end, the marks decide (`JobBook.cancel`): a job
        whose worker has its result already completes (409), any other is cancelled, also
        one that stopped or failed as the cancel came. (A job already sent to the Hunyuan3D
        server runs there to its end: that server cannot cancel; only our worker stops
        waiting for it.) The account a sign-in promised
        the job to may cancel it too; it moves to that account as it ends."""
        await self._owned(job_id, user_id)
        job = await self._job(job_id)
        if job is None or job.status in FINAL or await self.book.cancelled([job_id]):
            raise JobFinished(job_id)
        # First: its worker stops at the mark. False when its worker has its result already
        # (it is completing), or another cancel came first.
        if not await self.book.cancel(job_id):
            raise JobFinished(job_id)
        assert isinstance(job.queue, FairQueue)  # set by the queue that read it
        if not await job.queue.cancel(job, error="cancelled"):
            # It ended meanwhile. Completed (by an attempt that found its result written, or
            # one of an earlier version): it stays so. Else its worker stopped at the mark,
            # or it failed in that instant: it is cancelled (its files go below).
            if job.status == Status.COMPLETE:
                await self.book.uncancel(job_id)
                raise JobFinished(job_id)
        submitter = submitter_of(job)  # its places and folder, whoever cancels it
        await self.book.finished(job_id, submitter, holder_of(job))
        # Ended by the cancel (it waited for its turn or for a retry, or its worker is gone):
        # no worker holds it to clean up after it, nor to move it. A running job's worker
        # does both as it stops (if it dies first, saq's sweep ends the job, never retried,
        # and its files are left to the retention rules).
        if job.status in FINAL:
            folder = JobFolder(self.settings.assets_dir, submitter, job_id)
            await self.retention.remove(folder.path)
            await self.mover.keep_promise(job)
        return status_of(job, cancelled=True)

    async def result(self, job_id: str, user_id: str, kind: str) -> Path:
        await self._owned(job_id, user_id)
        path = JobFolder(self.settings.assets_dir, user_id, job_id).result(kind)
        if not await asyncio.to_thread(path.is_file):
            # Adopted, and its folder not renamed yet (a crash halfway): renamed now.
            if (from_id := await self.book.moving_from(job_id)) is not None:
                await self.mover.finish_move(job_id, from_id, user_id)
            if not await asyncio.to_thread(path.is_file):
                raise ResultNotFound(job_id)
        return path

    async def adopt(self, from_id: str, to: str) -> KindMoved:
        """At a sign-in: `from_id`'s jobs become `to`'s, oldest first, each whole (see the
        module's docstring). A finished one (completed or failed) moves now; one queued or
        running is promised to `to` and moves as it ends. Counted `kept`: a promised job (the
        anonymous id's until it ends, so the browser keeps its id meanwhile), and one whose
        files would pass GEN3D_MAX_BYTES_PER_USER of the account's."""
        await self.finish_moves()
        ids = await self.book.every(from_id)
        cancelled = await self.book.cancelled(ids)
        moved = kept = 0
        for job_id, job in zip(ids, await self._jobs(ids), strict=True):
            if job is None:  # its record expired (JOB_TTL_S)
                await self.book.forget(job_id, from_id)
                continue
            outcome: int | None
            if job.status in FINAL:
                outcome = await self.mover.move(job_id, from_id, to, job_id in cancelled)
            else:
                outcome = await self._promise(job_id, to)
            if outcome is None or outcome == KEPT:
                kept += 1
            elif outcome != NOT_THEIRS:  # another call moved it meanwhile
                moved += 1
        return KindMoved(moved=moved, kept=kept)

    async def _promise(self, job_id: str, to: str) -> int | None:
        """An unfinished job is promised to `to`, then read again: one that ended meanwhile
        (its worker looked for a promise before there was one) moves now. What
        `JobBook.move` did, or None: it moves as it ends."""
        await self.book.promise(job_id, to, self._lifetime())
        job = await self._job(job_id)
        if job is None or job.status not in FINAL:
            return None
        return await self.mover.keep_promise(job)

    async def finish_moves(self) -> None:
        """Moves what a crash left halfway: ended jobs still promised to an account (their
        worker died first, or saq's sweep ended them), then adopted jobs' folders that still
        have their old name."""
        promised = list(await self.book.promises())
        for job_id, job in zip(promised, await self._jobs(promised), strict=True):
            if job is None:  # expired since
                await self.book.unpromise(job_id)
            elif job.status in FINAL:
                await self.mover.keep_promise(job)
        for job_id, from_id in (await self.book.moving()).items():
            to = await self.book.owner(job_id)
            if to is None:  # expired since
                await self.book.moved(job_id)
                continue
            await self.mover.finish_move(job_id, from_id, to)

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
        """404, not 403, to others: job ids are not confirmed to strangers. A job a sign-in
        promised to the caller is theirs too, while it runs and once it moved."""
        owner, promised_to = await self.book.owner_and_promise(job_id)
        if owner == user_id:
            return
        if promised_to == user_id and await self._keeps_promise(job_id, user_id):
            return
        raise JobNotFound(job_id)

    async def _keeps_promise(self, job_id: str, to: str) -> bool:
        """Whether a job promised to `to` is theirs: while it runs, yes; once it ended, it
        moves (now, if a crash kept its worker from it) and is, unless it stayed anonymous
        (its files would pass the account's bytes)."""
        job = await self._job(job_id)
        if job is None:
            return False
        if job.status in FINAL:
            await self.mover.keep_promise(job)
            return await self.book.owner(job_id) == to
        return True

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
