"""The job queues (saq, in Redis) as the API and the workers both use them.

One saq queue per backend (`QUEUE_NAMES`), each with its own cap on waiting jobs and its own
workers, so a full GPU queue never refuses or delays relief jobs. saq keeps each job (status,
attempts, heartbeat, our progress in `meta`) under its own keys and sweeps jobs whose worker
stopped sending heartbeats: retried while attempts remain, else failed. Its per-job defaults
(10 s timeout, 1 attempt, 600 s ttl) are wrong for 3D work, so every job is enqueued with
the settings' values.

Fair turns (`FairQueue`): a new job waits in its holder's own list, not in saq's single
first-come list, and a worker takes the next holder's oldest job in turn, so one holder's
tenth job never goes before another's first (the holder: a signed-in user, or the client
address of anonymous callers, whose ids are free to make).

Our own keys:
- `gen3d:owner:{job_id}`: the user who submitted it (kept as long as the job).
- `gen3d:active:{user_id or holder}`: sorted set of the jobs not finished yet, by the time
  their place was taken (the caps per user and, for anonymous callers, per address).
- `gen3d:jobs:{user_id}`: sorted set of all the user's jobs by submission time (the listing).
- `gen3d:cancelled:{job_id}`: set when its owner cancelled it.
- `gen3d:completing:{job_id}`: set when its worker has its result (files written) and is to
  complete it. This mark and the cancel's are each set only while the other is not (`_FIRST`):
  whichever comes first decides how a job ends when its cancel meets its end.
- `gen3d:durations:{backend}`: the last 20 durations (s), for `estimated_time`.
- `gen3d:moving`: job id -> the anonymous id it was adopted from, while its folder has not
  been renamed to its new owner's yet (see `service.Gen3dService.adopt`).
- `gen3d:adopting`: job id -> the account a sign-in promised it to, while it was queued or
  running: it moves once it ends (see `service`'s docstring). A job has one entry at most,
  and only unfinished ones get one, so it stays small; the hash expires a job's lifetime
  after the last promise, renewed as any job starts or ends: a job's lifetime does not
  count its wait for its turn, so a promise kept only from the promise would lapse under a
  long queue (none outlives its job but by that wait).
- `saq:{queue}:wait:{holder}`, `saq:{queue}:ring`, `saq:{queue}:waiting`,
  `saq:{queue}:anonymous`, `saq:{queue}:wake`: the fair turns (see FairQueue).
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError
from saq import Job
from saq.job import Status
from saq.queue.redis import RedisQueue

from avatar_gen3d.errors import QueueFull
from avatar_gen3d.retention import FILES, HOLDER_OF, USAGE, held
from avatar_gen3d.schemas import Backend, JobState
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.rate import address_key

# relief keeps the name of the single queue of earlier versions: their jobs stay readable.
QUEUE_NAMES: dict[Backend, str] = {"relief": "gen3d", "hunyuan3d": "gen3d-hunyuan3d"}
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
ANONYMOUS_PREFIX = address_key("")  # anonymous callers' holders (the scripts' 'addr:')
LOST = "작업이 중단되었습니다. 다시 시도해 주세요."  # the worker died and no attempts were left
CANCELLED = "취소되었습니다."

# Anonymous callers' holders (their address's key, `addr:...`): their waiting jobs are also
# counted in `anonymous`, capped lower than the queue (signed-in users keep room).
_ANONYMOUS = """
local function anonymous(holder) return string.sub(holder, 1, 5) == 'addr:' end
local function uncount(key)
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
"""

# KEYS: incomplete, the job, its abort mark, ring, the holder's wait list, waiting, wake,
# anonymous. ARGV: the job serialized, holder, cap, anonymous callers' cap. Returns 1 when
# queued, 0 when the job is known already (saq's rule), -1 when `cap` jobs wait already (or,
# the holder anonymous, their cap of them).
_ENQUEUE = (
    _ANONYMOUS
    + """
if redis.call('ZSCORE', KEYS[1], KEYS[2]) or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
if tonumber(redis.call('GET', KEYS[6]) or '0') >= tonumber(ARGV[3]) then return -1 end
if anonymous(ARGV[2]) then
  if tonumber(redis.call('GET', KEYS[8]) or '0') >= tonumber(ARGV[4]) then return -1 end
  redis.call('INCR', KEYS[8])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 0, KEYS[2])
if redis.call('RPUSH', KEYS[5], KEYS[2]) == 1 then redis.call('RPUSH', KEYS[4], ARGV[2]) end
redis.call('INCR', KEYS[6])
redis.call('RPUSH', KEYS[7], 1)
redis.call('LTRIM', KEYS[7], -8, -1)
redis.call('EXPIRE', KEYS[7], 60)
return 1
"""
)

# KEYS: queued, active, ring, waiting, anonymous. ARGV: the prefix of wait lists. The id of
# the job moved to `active` (as saq's own dequeue does), or false.
_TAKE = (
    _ANONYMOUS
    + """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if id then return id end
local holder = redis.call('LPOP', KEYS[3])
if not holder then return false end
local wait = ARGV[1] .. holder
id = redis.call('LPOP', wait)
if redis.call('EXISTS', wait) == 1 then redis.call('RPUSH', KEYS[3], holder) end
if not id then return false end
redis.call('RPUSH', KEYS[2], id)
uncount(KEYS[4])
if anonymous(holder) then uncount(KEYS[5]) end
return id
"""
)

# KEYS: the holder's wait list, ring, waiting, anonymous. ARGV: job id, holder. 1 when the
# job was waiting (and now is not), else 0.
_UNWAIT = (
    _ANONYMOUS
    + """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('LREM', KEYS[2], 0, ARGV[2]) end
uncount(KEYS[3])
if anonymous(ARGV[2]) then uncount(KEYS[4]) end
return 1
"""
)

# KEYS: incomplete. ARGV: job id. 1 when the job waited for a retry (saq scheduled it at a
# time to come: a score above 0; a running or queued job's is 0) and now does not, else 0.
_UNSCHEDULE = """
local at = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if at <= 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


def holder_of(job: Job) -> str:
    """Whose turn a job waits for; jobs of earlier versions name none: their user's."""
    kwargs = job.kwargs or {}
    return str(kwargs.get("holder") or kwargs.get("user_id") or "")


def submitter_of(job: Job) -> str:
    """Who submitted a job: whose folder its worker writes and whose places it holds (its
    owner too, until a sign-in moves it)."""
    return str((job.kwargs or {}).get("user_id") or "")


class FairQueue(RedisQueue):
    """A saq queue whose new jobs are taken one holder at a time, in turn.

    A holder's jobs wait in `wait:{holder}` (oldest first) and `ring` lists each holder with
    a job waiting once; a worker pops the ring's first holder, takes their oldest job and
    puts them back at the end if more wait. `waiting` counts the jobs in all wait lists (the
    cap is checked in the same script that adds one, so parallel submissions cannot pass it
    together), and `wake` holds a token per new job for idle workers to block on. Retries
    saq puts back in its own `queued` list are taken first: they already had their turn.
    Each step is one script: any number of workers and API replicas share the turns.
    Anonymous callers' jobs (holders `addr:...`) are also counted in `anonymous`, capped at
    `anonymous_cap`: addresses are cheap (an IPv6 /56 is 256 of them), so they alone never
    fill the queue for signed-in users.

    Relies on saq 0.26's RedisQueue internals (the lock file pins it): `_enqueue`,
    `dequeue`, `abort` and `count` are the ones replaced."""

    def __init__(self, redis: Redis, name: str, cap: int, anonymous_cap: int) -> None:
        super().__init__(redis, name=name)
        self.cap, self.anonymous_cap = cap, anonymous_cap
        self._ring, self._waiting = self.namespace("ring"), self.namespace("waiting")
        self._anonymous = self.namespace("anonymous")
        self._wake = self.namespace("wake")
        self._fair_enqueue = redis.register_script(_ENQUEUE)
        self._take = redis.register_script(_TAKE)
        self._unwait = redis.register_script(_UNWAIT)
        self._unschedule = redis.register_script(_UNSCHEDULE)

    def _wait_list(self, holder: str) -> str:
        return self.namespace(f"wait:{holder}")

    async def _enqueue(self, job: Job) -> Job | None:
        holder = holder_of(job)
        keys = [
            self._incomplete, job.id, job.abort_id, self._ring, self._wait_list(holder),
            self._waiting, self._wake, self._anonymous,
        ]  # fmt: skip
        args = [self.serialize(job), holder, self.cap, self.anonymous_cap]
        queued = await self._fair_enqueue(keys=keys, args=args)
        if queued == -1:
            raise QueueFull()
        return job if queued == 1 else None

    async def dequeue(
        self,
        timeout: float = 0.0,  # noqa: ASYNC109  (saq's signature)
        poll_interval: float = 0.0,
    ) -> Job | None:
        """The next job in turn; waits for one up to `timeout` seconds (0: for ever), woken
        by new jobs and looking again every second (for retries saq puts back)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        while True:
            keys = [self._queued, self._active, self._ring, self._waiting, self._anonymous]
            job_id = await self._take(keys=keys, args=[self.namespace("wait:")])
            if job_id is not None:
                return await self._get_job_by_id(job_id)
            wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
            if wait <= 0:
                return None
            await self.redis.blpop([self._wake], timeout=wait)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        """A job still waiting for its turn, or for its retry, leaves its list and ends at
        once; any other is marked ABORTING for its worker to stop (saq's sweep calls this
        too). (saq's own abort would leave a job waiting for its retry ABORTING for ever: no
        worker holds it to finish it, and the record has no TTL.)"""
        if not await self._unqueue(job, error):
            await self._mark_aborting(job, error, ttl, cancel=False)

    async def cancel(self, job: Job, error: str, ttl: float = 5) -> bool:
        """`abort` for its owner: whether it was cancelled (False: it had ended, and `job`
        says how). Never retried after; one whose worker is gone (its heartbeat stale) ends
        here, and a running one stays in `active` so that saq's sweep ends it if its worker
        dies before it could stop it (saq's abort takes it off: nothing would end it)."""
        if await self._unqueue(job, error):
            return True
        if not await self._mark_aborting(job, error, ttl, cancel=True):
            return False
        # No live worker holds it (one never started is about to be: saq's `stuck` counts
        # its timeout from 0 then).
        if job.started and job.stuck:
            await self.finish(job, Status.ABORTED, error=error)
        return True

    async def _unqueue(self, job: Job, error: str) -> bool:
        """Whether the job waited for its turn or for its retry, and ended there now."""
        holder = holder_of(job)
        keys = [self._wait_list(holder), self._ring, self._waiting, self._anonymous]
        if await self._unwait(keys=keys, args=[job.id, holder]) or await self._unschedule(
            keys=[self._incomplete], args=[job.id]
        ):
            await self.finish(job, Status.ABORTED, error=error)
            return True
        return False

    async def _mark_aborting(self, job: Job, error: str, ttl: float, cancel: bool) -> bool:
        """saq's abort, on the record as it is now (WATCHed, `job` made that): one that ended
        meanwhile stays as it ended (saq's would write ABORTING over COMPLETE) and False is
        answered. The ABORTING record keeps the job's TTL, so nothing outlives it. A
        cancelled job gets no retry, and stays in `active` for the sweep."""
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(job.id)
                    stored = self.deserialize(await pipe.get(job.id))
                    if stored is None or stored.status in FINAL:
                        job.replace(stored or job)
                        return False
                    job.replace(stored)
                    if job.status != Status.ABORTING:  # the first abort's reason stays
                        job.status, job.error = Status.ABORTING, error
                    if cancel:
                        job.retries = 0
                    pipe.multi()
                    pipe.lrem(self._queued, 0, job.id)
                    pipe.zrem(self._incomplete, job.id)
                    pipe.set(job.id, self.serialize(job), ex=job.ttl if job.ttl > 0 else None)
                    pipe.setex(job.abort_id, max(1, round(ttl)), error)
                    pipe.publish(job.id, job.status)
                    if not cancel:
                        pipe.lrem(self._active, 0, job.id)
                    dequeued, *_ = await pipe.execute()
                    break
                except WatchError:  # written meanwhile (a report, its end): read it again
                    continue
        if dequeued:  # it waited in saq's list for a retry: nobody else ends it
            await self.finish(job, Status.ABORTED, error=error)
            await self.redis.delete(job.abort_id)
        return True

    async def full_for(self, holder: str) -> bool:
        """Whether a job of `holder` would find no room (checked again as it is queued)."""
        if holder.startswith(ANONYMOUS_PREFIX):
            if int(await self.redis.get(self._anonymous) or 0) >= self.anonymous_cap:
                return True
        return await self.count("queued") >= self.cap

    async def count(self, kind: Any) -> int:
        if kind == "queued":  # saq's list (retries) and the wait lists
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(self._queued)
                pipe.get(self._waiting)
                retries, waiting = await pipe.execute()
            return int(retries) + int(waiting or 0)
        return await super().count(kind)


def open_queue(settings: Gen3dSettings, backend: Backend) -> FairQueue:
    caps: dict[Backend, int] = {
        "relief": settings.max_waiting_jobs_relief,
        "hunyuan3d": settings.max_waiting_jobs_hunyuan3d,
    }
    redis = Redis.from_url(settings.redis_url)  # bytes, as saq reads its records
    anonymous_cap = max(1, int(caps[backend] * settings.anonymous_queue_share))
    return FairQueue(
        redis, name=QUEUE_NAMES[backend], cap=caps[backend], anonymous_cap=anonymous_cap
    )


def open_queues(settings: Gen3dSettings) -> dict[Backend, FairQueue]:
    return {backend: open_queue(settings, backend) for backend in QUEUE_NAMES}


def job_lifetime_s(settings: Gen3dSettings) -> float:
    """How long a job's records may live at most once it started: every attempt run to its
    timeout, then JOB_TTL_S once it ended (its wait for its turn is not counted)."""
    return settings.job_timeout_s * settings.job_retries + settings.job_ttl_s


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


# KEYS: the place sets (the user's, and an anonymous caller's address's). ARGV: job id, ttl,
# now, then each set's cap. 0 when a place was taken in every set, else the (1-based) index
# of a full set, and no place taken.
_CLAIM = """
for i, key in ipairs(KEYS) do
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[3], ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
end
return 0
"""
# A place taken this long ago whose job is not in the queue belongs to a submission that
# died halfway; younger ones may be submissions still storing their picture.
CLAIM_GRACE_S = 60


def places_of(user_id: str, holder: str) -> list[str]:
    """The sets a job takes a place in: its user's, and its holder's when that is another
    (the client address of an anonymous caller)."""
    return [f"gen3d:active:{key}" for key in dict.fromkeys((user_id, holder))]


MOVING, ADOPTING = "gen3d:moving", "gen3d:adopting"
# What `JobBook.move` did: the job was not `from`'s (moved already, or never), it moved and
# has no files counted (none left, or being removed by retention), it moved and its folder
# is to be renamed (it is listed in MOVING), or it stayed: it would pass the account's bytes.
NOT_THEIRS, MOVED_NO_FILES, MOVED, KEPT = 0, 1, 2, -1

# KEYS: the job's owner, from's listing, to's listing, retention's files, holder-of, usage,
# moving, adopting. ARGV: job id, from, to, its folder now, its folder to be, the prefix of
# retention's held(), the account's cap of bytes, the listing's ttl. One job from `from` to
# `to`, in one step (see `JobBook.move`); a promise of the job is settled by it, whatever
# the outcome.
_MOVE = """
redis.call('HDEL', KEYS[8], ARGV[1])
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local entry = redis.call('HGET', KEYS[5], ARGV[4])
local size, holder
if entry then
  size, holder = string.match(entry, '^(%d+) (.*)$')
  size = tonumber(size)
  local used = tonumber(redis.call('ZSCORE', KEYS[6], ARGV[3]) or '0')
  if used + size > tonumber(ARGV[7]) then return -1 end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if at then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], at, ARGV[1])
  if redis.call('TTL', KEYS[3]) < tonumber(ARGV[8]) then
    redis.call('EXPIRE', KEYS[3], ARGV[8])
  end
end
if not entry then return 1 end
redis.call('HDEL', KEYS[5], ARGV[4])
redis.call('HSET', KEYS[5], ARGV[5], size .. ' ' .. ARGV[3])
local written = redis.call('ZSCORE', KEYS[4], ARGV[4])
if written then
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('ZADD', KEYS[4], written, ARGV[5])
end
local finished = redis.call('ZSCORE', ARGV[6] .. holder, ARGV[4])
if finished then
  redis.call('ZREM', ARGV[6] .. holder, ARGV[4])
  redis.call('ZADD', ARGV[6] .. ARGV[3], finished, ARGV[5])
end
if tonumber(redis.call('ZINCRBY', KEYS[6], -size, holder)) <= 0 then
  redis.call('ZREM', KEYS[6], holder)
end
redis.call('ZINCRBY', KEYS[6], size, ARGV[3])
redis.call('HSET', KEYS[7], ARGV[1], ARGV[2])
return 2
"""


# KEYS: this side's mark (a cancel's or a completion's), the other side's. ARGV: ttl. 1 when
# this side's mark is set now, 0 when the other side's came first, 2 when this side's was
# there already. One script: a cancel and a completion never both pass.
_FIRST = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 1 end
return 2
"""
FIRST, SECOND = 1, 0  # what _FIRST answers (2: this side's mark was there)


class JobBook:
    """Who owns which job, who has how many running, and how long jobs take."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = redis, ttl_s
        self._move = redis.register_script(_MOVE)
        self._first = redis.register_script(_FIRST)

    async def claim(self, job_id: str, caps: dict[str, int]) -> str | None:
        """A place in each set of `caps` (place key -> cap), or the key of one that is full
        (then none is taken); one script, so parallel submissions cannot all slip under."""
        keys = list(caps)
        # redis-py types async commands as "Awaitable[T] | T"
        full = await self.redis.eval(  # type: ignore[misc]
            _CLAIM, len(keys), *keys, job_id, self.ttl_s, time.time(), *caps.values()
        )
        return keys[int(full) - 1] if full else None

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

    async def every(self, user_id: str) -> list[str]:
        """All the user's jobs, oldest first."""
        jobs: list[str] = await self.redis.zrange(f"gen3d:jobs:{user_id}", 0, -1)
        return jobs

    async def move(
        self, job_id: str, from_id: str, to: str, folders: tuple[str, str], cap_bytes: int
    ) -> int:
        """A finished job of `from_id` becomes `to`'s in one script: its owner (its expiry
        kept), its place in the listings (its score kept: the listing's order holds), and,
        when retention counts its folder, that entry: re-keyed to the folder to be (the
        second of `folders`), its bytes taken off its holder (the anonymous caller's address)
        and charged to `to`, unless they would pass `cap_bytes` of `to`'s: then nothing
        changes (KEPT). A folder that moves is listed in MOVING until `moved` says it was
        renamed. The job's promise (ADOPTING), if any, goes in the same step: it is kept, or
        void. NOT_THEIRS, MOVED_NO_FILES, MOVED or KEPT."""
        keys = [
            f"gen3d:owner:{job_id}", f"gen3d:jobs:{from_id}", f"gen3d:jobs:{to}", FILES,
            HOLDER_OF, USAGE, MOVING, ADOPTING,
        ]  # fmt: skip
        old, new = folders
        args: list[str | int] = [job_id, from_id, to, old, new, held(""), cap_bytes, self.ttl_s]
        return int(await self._move(keys=keys, args=args))

    async def moving(self) -> dict[str, str]:
        """Jobs whose folder is still to be renamed: job id -> the id it was adopted from."""
        pending: dict[str, str] = await self.redis.hgetall(MOVING)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return pending

    async def moving_from(self, job_id: str) -> str | None:
        from_id: str | None = await self.redis.hget(MOVING, job_id)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return from_id

    async def moved(self, job_id: str) -> None:
        await self.redis.hdel(MOVING, job_id)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"

    async def promise(self, job_id: str, to: str, lifetime_s: float) -> None:
        """An unfinished job is to move to `to` once it ends (a later sign-in's promise
        replaces an earlier one's: the browser is that account's now). The hash lives
        `lifetime_s` past this promise, a job's longest life: its entries outlive no job."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(ADOPTING, job_id, to)
            pipe.expire(ADOPTING, int(lifetime_s))
            await pipe.execute()

    async def renew_promises(self, lifetime_s: float) -> None:
        """The promises live `lifetime_s` from now (as a job starts or ends: one promised
        may have waited its turn longer than its lifetime; a missing hash stays missing)."""
        await self.redis.expire(ADOPTING, int(lifetime_s))

    async def promised_to(self, job_id: str) -> str | None:
        to: str | None = await self.redis.hget(ADOPTING, job_id)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return to

    async def promises(self) -> dict[str, str]:
        """Jobs promised at a sign-in and not moved yet: job id -> the account."""
        promised: dict[str, str] = await self.redis.hgetall(ADOPTING)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return promised

    async def unpromise(self, job_id: str) -> None:
        """The job's record expired: there is nothing left to move."""
        await self.redis.hdel(ADOPTING, job_id)  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"

    async def forget(self, job_id: str, user_id: str) -> None:
        """A job whose record expired leaves the listing too."""
        await self.redis.zrem(f"gen3d:jobs:{user_id}", job_id)

    async def cancel(self, job_id: str) -> bool:
        """Marks the job cancelled; False when its worker is completing it (it has its
        result), or another cancel marked it first: this one changes nothing."""
        keys = [f"gen3d:cancelled:{job_id}", f"gen3d:completing:{job_id}"]
        return int(await self._first(keys=keys, args=[self.ttl_s])) == FIRST

    async def completing(self, job_id: str) -> bool:
        """Marks the job as completing (its result written); False when its owner cancelled
        it first: it is cancelled, its result not kept. Said again by a later attempt: True."""
        keys = [f"gen3d:completing:{job_id}", f"gen3d:cancelled:{job_id}"]
        return int(await self._first(keys=keys, args=[self.ttl_s])) != SECOND

    async def uncancel(self, job_id: str) -> None:
        """A cancel that came as its job completed by itself: the job is as it ended."""
        await self.redis.delete(f"gen3d:cancelled:{job_id}")

    async def cancelled(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        marks = await self.redis.mget([f"gen3d:cancelled:{job_id}" for job_id in job_ids])
        return {job_id for job_id, mark in zip(job_ids, marks, strict=True) if mark}

    async def owner(self, job_id: str) -> str | None:
        owner: str | None = await self.redis.get(f"gen3d:owner:{job_id}")
        return owner

    async def owner_and_promise(self, job_id: str) -> tuple[str | None, str | None]:
        """The job's owner and the account it is promised to, read in one step: a move
        between two reads could show the job as neither's."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(f"gen3d:owner:{job_id}")
            pipe.hget(ADOPTING, job_id)
            owner, to = await pipe.execute()
        return owner, to

    async def active(self, places: str) -> list[tuple[str, float]]:
        """The places taken in one set, each job with the time its place was taken."""
        taken: list[tuple[str, float]] = await self.redis.zrange(places, 0, -1, withscores=True)
        return taken

    async def finished(self, job_id: str, user_id: str, holder: str) -> None:
        """The job gives its places back."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for places in places_of(user_id, holder):
                pipe.zrem(places, job_id)
            await pipe.execute()

    async def free(self, places: str, job_id: str) -> None:
        await self.redis.zrem(places, job_id)

    async def took(self, backend: str, seconds: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(f"gen3d:durations:{backend}", round(seconds, 2))
            pipe.ltrim(f"gen3d:durations:{backend}", 0, 19)
            await pipe.execute()

    async def typical_duration(self, backend: str) -> float:
        key = f"gen3d:durations:{backend}"
        recent = [float(d) for d in await self.redis.lrange(key, 0, -1)]  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return sum(recent) / len(recent) if recent else DEFAULT_DURATION_S
