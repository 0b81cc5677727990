"""The worker, run in-process against the same Redis as the API: a job completes and gives
its place back; bad input fails at once, for people to read, and is not retried."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avatar_gen3d.files import JobFolder
from avatar_gen3d.jobs import JobBook, open_queue
from avatar_gen3d.worker import alive, build_worker
from avatar_shared.app import open_http_client

from .helpers import picture


@asynccontextmanager
async def running_worker(settings, redis) -> AsyncIterator[None]:
    queue = open_queue(settings)
    await queue.connect()
    async with open_http_client() as http:
        worker = build_worker(settings, redis, queue, http)
        task = asyncio.create_task(worker.start())
        try:
            yield
        finally:
            await worker.stop()
            task.cancel()
            await queue.disconnect()


async def until_finished(client, job_id: str) -> dict:
    for _ in range(200):
        status = (await client.get(f"/api/generate/status/{job_id}")).json()["data"]
        if status["status"] in ("completed", "failed"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


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
    assert await book.active(user) == []
    assert await book.typical_duration("relief") < 30  # its own duration, not the guess


async def test_bad_input_fails_at_once_and_is_not_retried(gen3d, settings, redis):
    job_id = await submit(gen3d)
    user = await redis.get(f"gen3d:owner:{job_id}")
    JobFolder(settings.assets_dir, user, job_id).input.write_bytes(b"damaged on disk")
    async with running_worker(settings, redis):
        status = await until_finished(gen3d, job_id)
    assert (status["status"], status["error"]) == ("failed", "입력 이미지를 읽을 수 없습니다.")
    job = await open_queue(settings).job(job_id)
    assert job.attempts == 1  # no second attempt
    assert await JobBook(redis, settings.job_ttl_s).active(user) == []


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
