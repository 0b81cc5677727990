"""The job queue (saq, in Redis) as the API and the workers both use it.

saq keeps each job (status, attempts, heartbeat, our progress in `meta`) under its own keys
and sweeps jobs whose worker stopped sending heartbeats: retried while attempts remain,
else failed. Its per-job defaults (10 s timeout, 1 attempt, 600 s ttl) are wrong for 3D
work, so every job is enqueued with the settings' values.

Our own keys:
- `gen3d:owner:{job_id}`: the user who submitted it (kept as long as the job).
- `gen3d:active:{user_id}`: sorted set of the user's jobs not finished yet, by the time
  their place was taken (the per-user cap).
- `gen3d:jobs:{user_id}`: sorted set of all the user's jobs by submission time (the listing).
- `gen3d:cancelled:{job_id}`: set when its owner cancelled it.
- `gen3d:durations:{backend}`: the last 20 durations (s), for `estimated_time`.
"""

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from saq import Job, Queue
from saq.job import Status

from avatar_gen3d.schemas import JobState
from avatar_gen3d.settings import Gen3dSettings

QUEUE_NAME = "gen3d"
FUNCTION = "generate"
DEFAULT_DURATION_S = 30.0  # a guess until a backend has finished jobs
FINAL = {Status.COMPLETE, Status.FAILED, Status.ABORTED}
STATUS_OF: dict[Status, JobState] = {
    Status.NEW: "queued",
    Status.QUEUED: "queued",
    Status.ACTIVE: "processing",
    Status.ABORTING: "processing",
    Status.COMPLETE: "completed",
    Status.FAILED: "failed",
    Status.ABORTED: "failed",
}
LOST = "작업이 중단되었습니다. 다시 시도해 주세요."  # the worker died and no attempts were left
CANCELLED = "취소되었습니다."


def open_queue(settings: Gen3dSettings) -> Queue:
    return Queue.from_url(settings.redis_url, name=QUEUE_NAME)


def job_settings(settings: Gen3dSettings) -> dict[str, Any]:
    return {
        "timeout": settings.job_timeout_s,
        "heartbeat": settings.job_heartbeat_s,
        "retries": settings.job_retries,
        "ttl": settings.job_ttl_s,
        "retry_delay": 2.0,
        "retry_backoff": True,
    }


@dataclass(frozen=True)
class Progress:
    percent: int
    step: str | None
    error: str | None


def progress_of(job: Job) -> Progress:
    meta = job.meta or {}
    error = meta.get("error") or (LOST if job.status in (Status.FAILED, Status.ABORTED) else None)
    percent = 100 if job.status == Status.COMPLETE else int(meta.get("progress", 0))
    return Progress(percent, meta.get("step"), error if job.status in FINAL else None)


_CLAIM = """
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
return 1
"""
# A place taken this long ago whose job is not in the queue belongs to a submission that
# died halfway; younger ones may be submissions still storing their picture.
CLAIM_GRACE_S = 60


class JobBook:
    """Who owns which job, who has how many running, and how long jobs take."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = redis, ttl_s

    async def claim(self, job_id: str, user_id: str, cap: int) -> bool:
        """A place among the user's unfinished jobs, if fewer than `cap` are taken; one
        script, so parallel submissions cannot all slip under the cap."""
        key = f"gen3d:active:{user_id}"
        # redis-py types async commands as "Awaitable[T] | T"
        claimed = await self.redis.eval(  # type: ignore[misc]
            _CLAIM, 1, key, job_id, cap, self.ttl_s, time.time()
        )
        return bool(claimed)

    async def add(self, job_id: str, user_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"gen3d:owner:{job_id}", user_id, ex=self.ttl_s)
            pipe.zadd(f"gen3d:jobs:{user_id}", {job_id: time.time()})
            pipe.expire(f"gen3d:jobs:{user_id}", self.ttl_s)
            await pipe.execute()

    async def page(self, user_id: str, before: float | None, limit: int) -> list[tuple[str, float]]:
        """The user's jobs submitted before `before` (a timestamp), newest first, each with
        its submission time (its position in the listing, see avatar_shared.pages)."""
        top = f"({before}" if before is not None else "+inf"
        jobs: list[tuple[str, float]] = await self.redis.zrevrangebyscore(
            f"gen3d:jobs:{user_id}", top, "-inf", start=0, num=limit, withscores=True
        )
        return jobs

    async def forget(self, job_id: str, user_id: str) -> None:
        """A job whose record expired leaves the listing too."""
        await self.redis.zrem(f"gen3d:jobs:{user_id}", job_id)

    async def cancel(self, job_id: str) -> None:
        await self.redis.set(f"gen3d:cancelled:{job_id}", "1", ex=self.ttl_s)

    async def cancelled(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        marks = await self.redis.mget([f"gen3d:cancelled:{job_id}" for job_id in job_ids])
        return {job_id for job_id, mark in zip(job_ids, marks, strict=True) if mark}

    async def owner(self, job_id: str) -> str | None:
        owner: str | None = await self.redis.get(f"gen3d:owner:{job_id}")
        return owner

    async def active(self, user_id: str) -> list[tuple[str, float]]:
        """The user's places, each with the time it was taken."""
        places: list[tuple[str, float]] = await self.redis.zrange(
            f"gen3d:active:{user_id}", 0, -1, withscores=True
        )
        return places

    async def finished(self, job_id: str, user_id: str) -> None:
        await self.redis.zrem(f"gen3d:active:{user_id}", job_id)

    async def took(self, backend: str, seconds: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(f"gen3d:durations:{backend}", round(seconds, 2))
            pipe.ltrim(f"gen3d:durations:{backend}", 0, 19)
            await pipe.execute()

    async def typical_duration(self, backend: str) -> float:
        key = f"gen3d:durations:{backend}"
        recent = [float(d) for d in await self.redis.lrange(key, 0, -1)]  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return sum(recent) / len(recent) if recent else DEFAULT_DURATION_S
