"""A finished job becoming the account's at a sign-in, in its two steps: shared by the API (a
job finished at the sign-in, or one that ends by `cancel`) and the worker (a job promised
at the sign-in, as it ends). The steps, and what a crash between them leaves:
`service`'s docstring."""

import asyncio
import shutil
from contextlib import suppress
from pathlib import Path

from saq import Job

from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import MOVED, JobBook, submitter_of
from avatar_gen3d.retention import Retention


def rename_folder(old: Path, new: Path) -> None:
    """`old` becomes `new` in one step; nothing when `old` is gone (renamed already)."""
    new.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError):
        old.rename(new)


class Mover:
    def __init__(self, book: JobBook, retention: Retention, assets_dir: str) -> None:
        self.book, self.retention, self.assets_dir = book, retention, assets_dir

    async def move(self, job_id: str, from_id: str, to: str, cancelled: bool) -> int:
        """A finished job of `from_id` becomes `to`'s: step 1 (`JobBook.move`), then step 2
        when its folder is to be renamed. What `JobBook.move` did."""
        old, new = self.folders(job_id, from_id, to)
        if cancelled:
            # Its files go (`cancel` removes them just after the abort ends the job):
            # removed now, so none can move out of that removal's way.
            await self.retention.remove(old)
        outcome = await self.book.move(
            job_id, from_id, to, (str(old), str(new)), self.retention.max_bytes_per_holder
        )
        if outcome == MOVED:
            await self.finish_move(job_id, from_id, to)
        return outcome

    async def keep_promise(self, job: Job) -> int | None:
        """A job that has ended moves to the account a sign-in promised it to, if any (what
        `JobBook.move` did; None: no promise, or another caller kept it already)."""
        to = await self.book.promised_to(job.key)
        if to is None:
            return None
        cancelled = bool(await self.book.cancelled([job.key]))
        return await self.move(job.key, submitter_of(job), to, cancelled)

    def folders(self, job_id: str, from_id: str, to: str) -> tuple[Path, Path]:
        """The job's folder as `from_id`'s, and as `to`'s."""
        assets = self.assets_dir
        return JobFolder(assets, from_id, job_id).path, JobFolder(assets, to, job_id).path

    async def finish_move(self, job_id: str, from_id: str, to: str) -> None:
        """Step 2: the folder renamed (by another replica already, perhaps)."""
        old, new = self.folders(job_id, from_id, to)
        await asyncio.to_thread(rename_folder, old, new)
        await self.book.moved(job_id)
        if not await self.retention.counts(new):  # retention removed it meanwhile
            await asyncio.to_thread(shutil.rmtree, new, True)
