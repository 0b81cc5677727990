"""A cancel that meets the job's own end: one outcome, whichever comes first. A cancel that
wins ends the job cancelled (`failed`, "취소되었습니다.", no files, no bytes charged); one that
comes after the job completed answers 409 `job_finished` and leaves it completed with its
files; a job that stopped or failed as the cancel came is cancelled, never "interrupted".

Each race is held at one step (the worker in a step, or the cancel between its steps) until
the other side has moved: no timing decides the outcome."""

import asyncio
import threading

from saq.job import Status

from avatar_gen3d.backends import relief
from avatar_gen3d.backends.relief import foreground
from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import FINAL, FairQueue, JobBook, open_queue

from .helpers import post, running_worker

CANCELLED = ("failed", "취소되었습니다.")


async def ended(queue: FairQueue, job_id: str) -> Status:
    """The job's record once it ended (its worker stopping or finishing it)."""
    for _ in range(200):
        job = await queue.job(job_id)
        if job.status in FINAL:
            return job.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end: {job.status}")


def cancel_held_until_the_job_ends(monkeypatch, started: asyncio.Event | None = None):
    """The cancel, its mark set, waits for the job to end before it aborts it: what a worker
    that acts on the mark (or fails) in that instant does. `started`: set as it waits."""
    abort = FairQueue.cancel

    async def held(self, job, error, ttl=5):
        if started is not None:
            started.set()
        await ended(self, job.key)
        return await abort(self, job, error, ttl)

    monkeypatch.setattr(FairQueue, "cancel", held)


async def status_of(gen3d, job_id: str) -> tuple[str, str | None]:
    data = (await gen3d.get(f"/api/generate/status/{job_id}")).json()["data"]
    return data["status"], data["error"]


async def test_a_job_that_stops_at_the_mark_before_the_cancel_aborts_it_is_cancelled(
    gen3d, settings, redis, monkeypatch
):
    entered, release = threading.Event(), threading.Event()

    def held_step(image):
        entered.set()
        release.wait(10)
        return foreground(image)

    monkeypatch.setattr(relief, "foreground", held_step)
    abort = FairQueue.cancel

    async def let_the_worker_stop_first(self, job, error, ttl=5):
        release.set()  # the mark is set: the worker's next report stops the job
        await ended(self, job.key)
        return await abort(self, job, error, ttl)

    monkeypatch.setattr(FairQueue, "cancel", let_the_worker_stop_first)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    try:
        async with running_worker(settings, redis):
            assert await asyncio.to_thread(entered.wait, 10)
            cancelled = await gen3d.delete(f"/api/generate/{job_id}")
    finally:
        release.set()
    assert cancelled.status_code == 200, cancelled.text
    assert await status_of(gen3d, job_id) == CANCELLED  # not "작업이 중단되었습니다."
    assert not JobFolder(settings.assets_dir, user, job_id).path.exists()
    assert int(await redis.get("gen3d:bytes") or 0) == 0
    assert await JobBook(redis, settings.job_ttl_s).active(f"gen3d:active:{user}") == []


async def test_a_job_that_fails_as_the_cancel_comes_is_cancelled_and_leaves_nothing(
    gen3d, settings, redis, monkeypatch
):
    started = asyncio.Event()
    cancel_held_until_the_job_ends(monkeypatch, started)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    JobFolder(settings.assets_dir, user, job_id).input.write_bytes(b"damaged on disk")
    cancelling = asyncio.create_task(gen3d.delete(f"/api/generate/{job_id}"))
    await started.wait()  # the cancel read it queued and set its mark
    async with running_worker(settings, redis):  # which takes it and fails it (bad input)
        cancelled = await cancelling
    assert cancelled.status_code == 200, cancelled.text
    assert await status_of(gen3d, job_id) == CANCELLED
    assert not JobFolder(settings.assets_dir, user, job_id).path.exists()
    assert int(await redis.get("gen3d:bytes") or 0) == 0
    assert await JobBook(redis, settings.job_ttl_s).active(f"gen3d:active:{user}") == []


async def test_a_cancel_after_the_last_report_still_wins_before_the_job_completes(
    gen3d, settings, redis, monkeypatch
):
    entered, release = threading.Event(), threading.Event()
    write = JobFolder.write

    def held_write(self, name, data):
        if name == "model.glb":  # past its last report, writing its result
            entered.set()
            release.wait(10)
        return write(self, name, data)

    monkeypatch.setattr(JobFolder, "write", held_write)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    queue = open_queue(settings, "relief")
    try:
        async with running_worker(settings, redis):
            assert await asyncio.to_thread(entered.wait, 10)
            cancelled = await gen3d.delete(f"/api/generate/{job_id}")
            release.set()
            final = await ended(queue, job_id)
    finally:
        release.set()
    assert cancelled.status_code == 200, cancelled.text
    assert final != Status.COMPLETE
    assert await status_of(gen3d, job_id) == CANCELLED
    assert not JobFolder(settings.assets_dir, user, job_id).path.exists()  # nothing kept
    assert int(await redis.get("gen3d:bytes") or 0) == 0  # nor charged
    result = await gen3d.get(f"/api/generate/result/{job_id}.glb")
    assert result.status_code == 404


async def test_a_cancel_after_the_job_has_its_result_answers_409_and_the_job_completes(
    gen3d, settings, redis, monkeypatch
):
    entered, release = asyncio.Event(), asyncio.Event()
    took = JobBook.took

    async def held_took(self, backend, seconds):
        entered.set()  # its files written: the job is completing
        await release.wait()
        return await took(self, backend, seconds)

    monkeypatch.setattr(JobBook, "took", held_took)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    queue = open_queue(settings, "relief")
    try:
        async with running_worker(settings, redis):
            await entered.wait()
            refused = await gen3d.delete(f"/api/generate/{job_id}")
            release.set()
            final = await ended(queue, job_id)
    finally:
        release.set()
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "job_finished"
    assert final == Status.COMPLETE
    assert await status_of(gen3d, job_id) == ("completed", None)
    assert (await gen3d.get(f"/api/generate/result/{job_id}.glb")).status_code == 200
    folder = JobFolder(settings.assets_dir, user, job_id).path
    assert {path.name for path in folder.iterdir()} == {"model.glb", "preview.png"}
    assert int(await redis.get("gen3d:bytes") or 0) > 0


async def test_of_two_cancels_at_once_one_ends_the_job_and_the_other_answers_409(
    gen3d, settings, redis, monkeypatch
):
    both = asyncio.Barrier(2)
    mark = JobBook.cancel

    async def together(self, job_id):
        await both.wait()  # each has read the job unfinished and not cancelled yet
        return await mark(self, job_id)

    monkeypatch.setattr(JobBook, "cancel", together)
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    answers = await asyncio.gather(*(gen3d.delete(f"/api/generate/{job_id}") for _ in "ab"))
    assert sorted(a.status_code for a in answers) == [200, 409]
    assert await status_of(gen3d, job_id) == CANCELLED  # the loser took no mark away


async def test_a_cancel_that_came_before_a_retry_found_the_result_written_wins(
    gen3d, settings, redis
):
    """An attempt that died with its result written but not marked in (the preview written
    last, `completing` not reached): the next attempt finds it written. A cancel that came
    in between (its mark set first) wins there too: nothing kept, nothing charged."""
    job_id = (await post(gen3d)).json()["data"]["job_id"]
    user = await redis.get(f"gen3d:owner:{job_id}")
    folder = JobFolder(settings.assets_dir, user, job_id)
    folder.write("model.glb", b"glTF")  # what the attempt that died left
    folder.write("preview.png", b"\x89PNG")
    assert await JobBook(redis, settings.job_ttl_s).cancel(job_id)  # the cancel's first step
    async with running_worker(settings, redis):
        final = await ended(open_queue(settings, "relief"), job_id)
    assert final != Status.COMPLETE
    assert await status_of(gen3d, job_id) == CANCELLED
    assert not folder.path.exists()
    assert int(await redis.get("gen3d:bytes") or 0) == 0
