"""The caller's jobs: listed newest first a page at a time, and cancelled while they wait
(no worker runs here, so every job stays queued)."""

import pytest
from saq.job import Status
from saq.utils import now

from avatar_gen3d.app import create_app
from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import open_queue

from .helpers import picture


async def submit(client) -> str:
    response = await client.post("/api/generate", files={"image": ("a.png", picture())})
    assert response.status_code == 202, response.text
    return response.json()["data"]["job_id"]


@pytest.fixture
async def roomy(app_client, settings):
    async with app_client(
        create_app(settings.model_copy(update={"max_queued_jobs_per_user": 5}))
    ) as c:
        yield c


async def test_jobs_are_listed_newest_first_a_page_at_a_time(roomy, app_client, settings):
    made = [await submit(roomy) for _ in range(3)]
    first = (await roomy.get("/api/generate/jobs", params={"limit": 2})).json()["data"]
    assert [j["job_id"] for j in first["jobs"]] == made[::-1][:2]
    assert all(j["status"] == "queued" for j in first["jobs"])
    rest = await roomy.get(
        "/api/generate/jobs", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [j["job_id"] for j in rest.json()["data"]["jobs"]] == [made[0]]
    assert rest.json()["data"]["next_cursor"] is None
    async with app_client(create_app(settings)) as stranger:
        assert (await stranger.get("/api/generate/jobs")).json()["data"]["jobs"] == []


@pytest.mark.parametrize("cursor", ["yesterday", "nan", "inf"])
async def test_a_bad_cursor_is_refused(roomy, cursor):
    response = await roomy.get("/api/generate/jobs", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "cursor" in response.json()["error"]["message"]


async def test_a_waiting_job_is_cancelled_once_and_frees_its_place(gen3d, app_client, settings):
    jobs = [await submit(gen3d) for _ in range(settings.max_queued_jobs_per_user)]
    async with app_client(create_app(settings)) as stranger:
        assert (await stranger.delete(f"/api/generate/{jobs[0]}")).status_code == 404
    cancelled = await gen3d.delete(f"/api/generate/{jobs[0]}")
    assert cancelled.status_code == 200
    status = (await gen3d.get(f"/api/generate/status/{jobs[0]}")).json()["data"]
    assert (status["status"], status["error"]) == ("failed", "취소되었습니다.")
    again = await gen3d.delete(f"/api/generate/{jobs[0]}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert (
        await gen3d.post("/api/generate", files={"image": ("a.png", picture())})
    ).status_code == 202


async def test_the_estimate_counts_the_jobs_ahead(roomy):
    estimates = []
    for _ in range(3):
        response = await roomy.post("/api/generate", files={"image": ("a.png", picture())})
        estimates.append(response.json()["data"]["estimated_time"])
    # No finished job yet: 30 s a job (the guess), one worker assumed, each job behind the last.
    assert estimates == [30, 60, 90]


async def test_a_place_whose_job_ended_without_giving_it_back_is_free_again(gen3d, settings):
    jobs = [await submit(gen3d) for _ in range(settings.max_queued_jobs_per_user)]
    queue = open_queue(settings, "relief")
    job = await queue.job(jobs[0])
    # What saq's sweep does to a job whose worker died on its last attempt: it ends there,
    # and nobody tells our book that its place is free.
    await queue.finish(job, Status.ABORTED, error="swept")
    response = await gen3d.post("/api/generate", files={"image": ("a.png", picture())})
    assert response.status_code == 202, response.text


async def taken_by_a_worker_that_dies(queue, stale: bool):
    """A running job as a worker leaves it when it dies (killed, OOM) just after taking it:
    ACTIVE, in saq's `active` list, its heartbeat fresh (or long stale)."""
    job = await queue.dequeue(timeout=1)
    job.started, job.attempts = now(), job.attempts + 1  # as saq's worker starts it
    await job.update(status=Status.ACTIVE)
    if stale:
        job.touched -= 1000 * (job.heartbeat + 1)
        await queue.redis.set(job.id, queue.serialize(job))
    return job


async def test_cancelling_a_job_whose_worker_is_gone_ends_it_at_once(gen3d, settings, redis):
    job_id = await submit(gen3d)
    queue = open_queue(settings, "relief")
    await taken_by_a_worker_that_dies(queue, stale=True)
    cancelled = await gen3d.delete(f"/api/generate/{job_id}")
    assert cancelled.json()["data"]["error"] == "취소되었습니다."
    job = await queue.job(job_id)
    assert job.status == Status.ABORTED  # not left ABORTING for ever
    assert 0 < await redis.ttl(job.id) <= settings.job_ttl_s
    assert int(await redis.get("gen3d:bytes") or 0) == 0  # its input is gone
    user = await redis.get(f"gen3d:owner:{job_id}")
    assert not JobFolder(settings.assets_dir, user, job_id).path.exists()


async def test_a_job_cancelled_as_its_worker_died_is_ended_by_the_sweep(gen3d, settings, redis):
    job_id = await submit(gen3d)
    queue = open_queue(settings, "relief")
    await taken_by_a_worker_that_dies(queue, stale=False)  # died before its heartbeat is due
    assert (await gen3d.delete(f"/api/generate/{job_id}")).status_code == 200
    await queue.sweep(lock=1, abort=0.1)  # saq's, as a worker runs it every few seconds
    job = await queue.job(job_id)
    assert job.status == Status.ABORTED and job.attempts == 1  # ended, never retried
    assert 0 < await redis.ttl(job.id) <= settings.job_ttl_s
    await redis.delete(f"gen3d:cancelled:{job_id}")  # its mark gone: the record says so too
    status = (await gen3d.get(f"/api/generate/status/{job_id}")).json()["data"]
    assert status["status"] == "failed"


async def test_a_cancel_never_overwrites_a_job_that_ended_meanwhile(gen3d, settings, redis):
    job_id = await submit(gen3d)
    queue = open_queue(settings, "relief")
    read = await taken_by_a_worker_that_dies(queue, stale=False)  # as the cancel read it
    await queue.finish(await queue.job(job_id), Status.COMPLETE)  # then its worker finished
    await queue.abort(read, error="cancelled")
    job = await queue.job(job_id)
    assert job.status == Status.COMPLETE
    assert 0 < await redis.ttl(job.id) <= settings.job_ttl_s
