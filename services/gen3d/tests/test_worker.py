"""The worker, run in-process against the same Redis as the API: a job completes and gives
its place back; bad input fails at once, for people to read, and is not retried."""

import asyncio
import socket

from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import JobBook, open_queue
from avatar_gen3d.worker import alive

from .helpers import picture, running_worker, until_finished


async def submit(client) -> str:
    response = await client.post("/api/generate", files={"image": ("a.png", picture())})
    return response.json()["data"]["job_id"]


async def test_a_job_completes_and_gives_its_place_back(gen3d, settings, redis):
    job_id = await submit(gen3d)
    async with running_worker(settings, redis):
        status = await until_finished(gen3d, job_id)
    assert (status["status"], status["progress"], status["error"]) == ("completed", 100, None)
    user = await redis.get(f"gen3d:owner:{job_id}")
    book = JobBook(redis, settings.job_ttl_s)
    assert await book.active(f"gen3d:active:{user}") == []
    assert await book.typical_duration("relief") < 30  # its own duration, not the guess


async def test_bad_input_fails_at_once_and_is_not_retried(gen3d, settings, redis):
    job_id = await submit(gen3d)
    user = await redis.get(f"gen3d:owner:{job_id}")
    JobFolder(settings.assets_dir, user, job_id).input.write_bytes(b"damaged on disk")
    async with running_worker(settings, redis):
        status = await until_finished(gen3d, job_id)
    assert (status["status"], status["error"]) == ("failed", "입력 이미지를 읽을 수 없습니다.")
    job = await open_queue(settings, "relief").job(job_id)
    assert job.attempts == 1  # no second attempt
    assert await JobBook(redis, settings.job_ttl_s).active(f"gen3d:active:{user}") == []


async def test_alive_while_a_worker_of_this_host_reports(settings, redis):
    host = socket.gethostname()
    assert not await alive(settings, host)  # none started yet
    async with running_worker(settings, redis):
        for _ in range(100):  # saq lists a worker once its first report is in
            if await alive(settings, host):
                break
            await asyncio.sleep(0.05)
        assert await alive(settings, host)
        assert not await alive(settings, f"{host}-another-container")
