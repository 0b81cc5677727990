"""Learning long-term memories from conversations, in the background, at bounded cost.

After a turn of a conversation whose memory is `on` (and that has a character), its messages
not yet read are read for facts: at once (a background task) when MEMORY_LEARN_EVERY of
them have come, else when it has been quiet for MEMORY_IDLE_S (a job in Redis that any
replica's sweeper takes). A reading is one LLM call that waits behind every chat turn for
its slot, counts in the caller's chat rate and calls in flight as a summary call does (at
the cap of the latter, it is put off until the conversation goes quiet), and answers JSON that
must match `FACTS_SCHEMA` (the servers' structured outputs). It never delays a reply.

What the answer says is checked before anything is stored: a malformed answer stores
nothing, and a fact whose text cannot make a memory (blank, control characters) is dropped
alone. Each fact is then merged into the user's memories of the character:
- a fact for a slot (`key`) a learned memory already fills replaces that memory's text when
  it says anything else (a correction, however alike), the older text kept in its history;
  the same fact said again (case and spacing aside) changes nothing;
- a near-duplicate of any memory (most of its terms shared) is not stored twice;
- else it is a new memory, within the user's quota (past it, nothing more is stored).

Branches and edits: a reading marks how far it read (`memory_marks`, as (messages, digest)
in the session's hash). A conversation edited before that point is read again from the last
mark that still matches, and the memories learned from what was edited away are forgotten
(`forget_edited`); at a prompt, a memory learned in the conversation's own lineage (the
conversation, the one it branched from, their branches) is used only while the
conversation still holds the messages it was learned from (`memory.recall.visible`).

What is said while the memory is read_only or off is never learned: a turn then marks its
messages read (`mark_read`), and they are stored flagged `unlearned`
(`conversations.messages`), so a reading leaves them out of what it reads whatever the
marks say (an edit before them voids the marks past it; an edit keeps a flag, a branch
copies it). The marks and digests count every message; only the transcript drops flagged
ones. A client's conversation carries no flags: it is never read below `memory_paused_at`,
the end of its last turn that did not learn (kept by `SAVE_MARK`).

Keys: `chat:memory:due` (session ids scored by when they go idle) and
`chat:memory:job:{session_id}` (what reading it needs: its owner, character, lineage and
the unread messages with their digests; expires a while after it is due); the session's
reading lock `chat:session:{id}:memory-lock`; the lock of merges into one user's memories of
one character, `memories:merge:{user_id}:{character_id}`.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext, suppress
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from avatar_chat.context.summaries import prefix_digests
from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.limits.admission import Admission, PutOff
from avatar_chat.llm import LlmClient, LlmRequest
from avatar_chat.memory.errors import MemoryQuotaExceeded
from avatar_chat.memory.ranking import MemoryIndex, terms
from avatar_chat.memory.schemas import Kind, MemoryText
from avatar_chat.memory.store import MemoryStore, Origin, Remembered
from avatar_chat.metrics import LLM_TOKENS, MEMORY_FACTS_DROPPED, MEMORY_LEARNING
from avatar_chat.settings import ChatSettings
from avatar_shared.errors import AppError
from avatar_shared.gate import Gate
from avatar_shared.locks import LockTimeout, redis_lock
from avatar_shared.owned import Owner
from avatar_shared.rate import RateLimit

log = logging.getLogger(__name__)

Message = dict[str, str]

LEARN_INSTRUCTIONS = """\
You keep the long-term memory a role-play character has of its user. Read the new part of
their conversation and list the facts worth remembering in later conversations: the user's
name and nicknames, their relationships, promises and plans, likes and dislikes, and the
state of the world they share. One short sentence per fact, in the language of the
conversation, about the user or their shared story (not what the character said of itself).
Give each fact a `key`: the slot it fills, short lowercase words joined by dots or
underscores (user.name, user.likes.food, promise.picnic). A newer fact for a slot replaces
the older one, so reuse a known fact's key when the new part changes that fact. Do not list
known facts again unless they changed. Answer with JSON only."""
KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # a slot: user.name, promise.picnic
KINDS = ["name", "relationship", "promise", "preference", "world", "other"]
MAX_FACTS = 16  # facts one reading may store
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "maxItems": MAX_FACTS,
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "pattern": KEY_PATTERN},
                    "kind": {"type": "string", "enum": KINDS},
                    "text": {"type": "string"},
                },
                "required": ["key", "kind", "text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}
# A summary made ahead for a conversation whose memory is on lists the facts too (one call).
ALSO_FACTS = """
Also list the facts of the new part worth remembering in later conversations, as `facts`:
the user's name and nicknames, relationships, promises and plans, likes and dislikes, the
state of their shared world; one short sentence each, with a `key` naming the slot it fills
(user.name, user.likes.food). Answer with JSON only: the summary as `summary`, and `facts`."""
SUMMARY_AND_FACTS_SCHEMA: dict[str, Any] = {
    **FACTS_SCHEMA,
    "properties": {"summary": {"type": "string"}, **FACTS_SCHEMA["properties"]},
    "required": ["summary", "facts"],
}
LEARN_TEMPERATURE = 0.2  # faithful rather than creative
KNOWN_SHOWN = 30  # known facts shown to a reading, the most relevant to what it reads
NEAR_DUPLICATE = 0.8  # share of terms two facts have in common to be one
KEPT_MARKS = 12  # readings a session remembers (to resume after an edit)
MERGE_LOCK_S = 10.0  # a merge is a few Redis writes; its lock outlives no replica longer
MAX_TASKS = 64  # readings one replica runs at once; more wait for a later turn
# Readings of one job, the failed ones tried again each MEMORY_IDLE_S: a conversation whose
# reading always fails (an answer always too slow, say) does not cost a call for ever; its
# messages are read again at its next turn.
MAX_TRIES = 3
SWEEP_AGAIN_S = 1.0  # after a sweep that took some, the next one, while there is room
SPEAKERS = {"user": "User", "assistant": "Character"}


@dataclass(frozen=True)
class Job:
    """What reading a conversation needs, from the turn that made it due."""

    session_id: str
    user_id: str
    address: str | None  # an anonymous owner's address key: their memories' quotas
    caller: str  # whose rate and whose line in the gate
    character_id: str
    root: str
    start: int  # messages read before (the unread ones follow)
    turns: list[Message]  # the unread messages
    digests: list[str]  # digests[i]: the conversation up to message start + i
    unlearned: list[int]  # numbers (from the first) of messages never read: left out
    last_message_id: str | None
    model: str
    window: int
    tries: int = 0  # readings of it that failed (rate limited, the LLM failing, too slow)

    @property
    def owner(self) -> Owner:
        return Owner(self.user_id, self.address)


# A learned fact's text, as the API takes a memory's (`schemas.NewMemory`).
_MEMORY_TEXT = TypeAdapter(Annotated[MemoryText, Field(min_length=1)])


class LearnedFact(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)  # a text of blanks is no fact

    key: str = Field(pattern=KEY_PATTERN)
    kind: Kind
    text: str  # checked by `LearnedFacts`, one fact at a time

    @field_validator("key", mode="before")
    @classmethod
    def _slot(cls, value: object) -> object:
        # Models write "User name" as often as "user.name": one slot either way.
        return "_".join(value.lower().split()) if isinstance(value, str) else value


class LearnedFacts(BaseModel):
    facts: list[LearnedFact] = Field(max_length=MAX_FACTS)

    @field_validator("facts")
    @classmethod
    def _memorable(cls, facts: list[LearnedFact]) -> list[LearnedFact]:
        """The facts whose text can make a memory: one that cannot (blank, control
        characters: nothing the schema the server holds the model to rules out) is dropped
        alone, not the answer's other facts. A fact off the schema (an unknown kind, a key
        that is not a slot) still voids the whole answer: the server did not hold to it."""
        kept = []
        for fact in facts:
            try:
                _MEMORY_TEXT.validate_python(fact.text)
            except ValidationError:
                MEMORY_FACTS_DROPPED.inc()
                log.warning("a learned fact (%s) dropped: its text cannot make a memory", fact.key)
                continue
            kept.append(fact)
        return kept


class SummaryAndFacts(LearnedFacts):
    summary: str


def read_marks(meta: dict[str, str]) -> list[tuple[int, str]]:
    try:
        return [(int(n), str(d)) for n, d in json.loads(meta.get("memory_marks") or "[]")]
    except (ValueError, TypeError):
        return []


def resume_at(marks: list[tuple[int, str]], digests: list[str]) -> int:
    """How many messages of this conversation were read: the last mark it still holds."""
    held = [n for n, d in marks if n < len(digests) and digests[n] == d]
    return max(held, default=0)


def similarity(a: str, b: str) -> float:
    """Share of terms two texts have in common (Jaccard)."""
    return _shared(frozenset(terms(a)), frozenset(terms(b)))


def _shared(left: frozenset[str], right: frozenset[str]) -> float:
    common = len(left & right)
    return common / (len(left) + len(right) - common) if left or right else 1.0


def _near_duplicate(known: list[frozenset[str]], fact: frozenset[str]) -> bool:
    """Whether most of the fact's terms (and most of a memory's) are one memory's."""
    return any(_shared(memory, fact) >= NEAR_DUPLICATE for memory in known)


def _most_relevant(known: list[Remembered], transcript: str) -> list[Remembered]:
    """The known facts a reading is shown: the most relevant to what it reads."""
    return MemoryIndex.build(known).choose(transcript, 10**9, _free)[:KNOWN_SHOWN]


class MemoryLearner:
    def __init__(
        self,
        redis: Redis,
        llm: LlmClient,
        gate: Gate,
        store: MemoryStore,
        rate: RateLimit,
        settings: ChatSettings,
        admission: Admission | None = None,
    ) -> None:
        self.redis = redis
        self.llm = llm
        self.admission = admission  # a reading counts in its caller's calls in flight
        self.gate = gate
        self.store = store
        self.rate = rate
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._mark = redis.register_script(SAVE_MARK)

    # --- after a turn --------------------------------------------------------------------

    def after_turn(
        self,
        job_of: "JobDraft",
        turns: list[Message],
        meta: dict[str, str],
        unlearned: frozenset[int],
    ) -> None:
        """A turn was recorded (`turns`: the conversation with its reply, `meta`: its
        session's hash before the turn, `unlearned`: the positions in `turns` of messages
        never read): in the background, off the reply's path, its unread messages are read
        now if enough came, else scheduled for when it goes quiet."""
        self._background(self._after(job_of, turns, meta, unlearned), job_of.session_id)

    async def _after(
        self,
        job_of: "JobDraft",
        turns: list[Message],
        meta: dict[str, str],
        unlearned: frozenset[int],
    ) -> None:
        digests = prefix_digests(turns)
        start = max(resume_at(read_marks(meta), digests), job_of.floor)
        never = sorted(n for n in unlearned if n >= start)
        job = job_of.at(start, turns[start:], digests[start:], never)
        if not job.turns:
            return
        if len(job.turns) >= self.settings.memory_learn_every:
            await self.drop_job(job.session_id)  # read now, not again when quiet
            if self.start(job):
                return
        await self._due_later(job)  # no room now: when it is quiet, then

    def mark_read(self, session_id: str, turns: list[Message]) -> None:
        """A turn of a conversation whose memory does not learn (read_only, off): its messages
        count as read, so turning learning back on never teaches what was tried out."""
        end = len(turns)
        work = self._marked(session_id, end, prefix_digests(turns)[end], paused=True)
        self._background(work, session_id)

    async def drop_job(self, session_id: str) -> None:
        """The conversation changed (an edit, a delete) or is gone: a reading waiting for it
        to go quiet would read messages it no longer holds."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(DUE, session_id)
            pipe.delete(job_key(session_id))
            await pipe.execute()

    def start(self, job: Job) -> bool:
        """Reads the job in the background, if this replica has room (else False)."""
        if len(self._tasks) >= MAX_TASKS:
            log.info("memory reading of session %s left for later: too many", job.session_id)
            return False
        self._background(self._read_safely(job), job.session_id)
        return True

    def _background(self, work: Coroutine[Any, Any, None], session_id: str) -> None:
        task = asyncio.create_task(self._logged(work, session_id), name=f"memory-{session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Cancelled at shutdown before it ran, `work` was never started: closed, not warned of.
        task.add_done_callback(lambda _: work.close())

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None], session_id: str) -> None:
        try:
            await work
        except RedisError as exc:  # scheduling failed: a later turn schedules it again
            log.warning("memory reading of session %s not scheduled: %s", session_id, exc)
        except Exception:  # a bug: no one awaits this task to hear of it otherwise
            log.exception("memory reading of session %s failed", session_id)

    async def _due_later(self, job: Job, again: bool = False) -> None:
        """Reads the job once the conversation is quiet. `again`: a reading put back (failed,
        put off), which leaves a job queued since in place: that one is a later turn's, and
        holds the reading's messages and the newer ones (a turn that starts a reading at
        once drops the job waiting, so no older one is left to block it)."""
        due = time.time() + self.settings.memory_idle_s
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(job_key(job.session_id), json.dumps(asdict(job)), ex=self._job_ttl_s, nx=again)
            pipe.zadd(DUE, {job.session_id: due}, nx=again)
            await pipe.execute()

    @property
    def _job_ttl_s(self) -> int:
        return self.settings.memory_idle_s + 3600  # long enough to be swept, then gone

    # --- quiet conversations -------------------------------------------------------------

    async def sweep(self) -> int:
        """Reads the conversations that went quiet, as many as this replica has room for:
        each taken by one replica (the first to remove it from the due set). Entries whose
        job expired unswept are dropped. How many were taken."""
        now = time.time()
        await self.redis.zremrangebyscore(DUE, "-inf", now - self._job_ttl_s)
        room = MAX_TASKS - len(self._tasks)
        due = await self.redis.zrangebyscore(DUE, "-inf", now, start=0, num=max(room, 0))
        taken = 0
        for session_id in due:
            if len(self._tasks) >= MAX_TASKS:
                break  # left due: the next sweep takes it
            if not await self.redis.zrem(DUE, session_id):
                continue  # another replica's
            raw = await self.redis.getdel(job_key(session_id))
            try:
                job = Job(**json.loads(raw)) if raw else None
            except (ValueError, TypeError):
                # Written by another version (one without `unlearned`, say): dropped; its
                # messages are read by the conversation's next turn, flags and all.
                log.warning("memory job of session %s unreadable, dropped", session_id)
                continue
            if job is not None:
                taken += 1
                self.start(job)
        return taken

    def start_sweeping(self) -> None:
        """Sweeps every half MEMORY_IDLE_S (at most 30 s) until `close`."""
        every_s = min(self.settings.memory_idle_s / 2, 30.0)
        self._sweeper = asyncio.create_task(self._sweep_until_closed(every_s))

    async def _sweep_until_closed(self, every_s: float) -> None:
        # A stop flag, not only the cancellation: a cancellation that lands inside a Redis
        # call can be absorbed by the client, and the loop must end all the same.
        while not self._closed.is_set():
            taken = 0
            try:
                taken = await self.sweep()
            except RedisError as exc:
                log.warning("memory sweep failed (tried again): %s", exc)
            except Exception:  # a bug: the sweeps must go on for every other conversation
                log.exception("memory sweep failed (tried again)")
            # A sweep that took some means more may be due: sweep again soon, while there is room.
            pause = SWEEP_AGAIN_S if taken and len(self._tasks) < MAX_TASKS else every_s
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), pause)

    async def close(self) -> None:
        """At shutdown: the sweeps and the readings stop (a reading's lock expires by itself,
        and its messages are read at a later turn)."""
        self._closed.set()
        running = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # --- a reading -----------------------------------------------------------------------

    async def _read_safely(self, job: Job) -> None:
        try:
            outcome = await self.read(job)
        except Exception:  # a bug: no one awaits this task to hear of it otherwise
            outcome = "failed"
            log.exception("memory reading of session %s failed", job.session_id)
        MEMORY_LEARNING.labels(outcome).inc()

    async def read(self, job: Job) -> str:
        """One reading of the job's unread messages, under the session's lock (tried once: a
        held one means another replica is on it). Its outcome, for the metric."""
        lock = f"chat:session:{job.session_id}:memory-lock"
        try:
            async with redis_lock(
                self.redis, lock, expire_s=self.settings.summary_timeout_s + 5, wait_s=0
            ):
                async with asyncio.timeout(self.settings.summary_timeout_s):
                    return await self._read(job)
        except LockTimeout:
            return "skipped"
        except PutOff:  # the caller's calls in flight are at their cap: when it is quiet
            with suppress(RedisError):  # else a later turn schedules it again
                await self._due_later(job, again=True)
            return "skipped"
        except (AppError, TimeoutError, RedisError) as exc:
            log.warning("memory reading of session %s failed: %s", job.session_id, exc or "")
            if job.tries + 1 < MAX_TRIES:  # when it is quiet again; not for ever
                with suppress(RedisError):  # else a later turn schedules it again
                    await self._due_later(replace(job, tries=job.tries + 1), again=True)
            return "failed"

    async def _read(self, job: Job) -> str:
        job = await self._still_unread(await self._owned_now(job))
        if not job.turns:
            return "skipped"  # read meanwhile (a quiet conversation's job, say)
        end_of_job = job.start + len(job.turns)
        whole = await self._digests(job)
        if whole is GONE or not _holds_job(job, whole, end_of_job):
            return "stale"  # deleted, or edited since the job was made
        full = whole if isinstance(whole, list) else None
        recalled = await self.store.recall(job.user_id, job.character_id)
        memories = recalled.memories
        await self.forget_edited(job.owner, job.character_id, job.session_id, memories, job, full)
        block = self._block(job)
        end = job.start + len(block)
        never = set(job.unlearned)
        read = [turn for n, turn in enumerate(block, job.start) if n not in never]
        if not read:  # all said while memory was read_only or off: read, nothing to learn
            await self._marked(job.session_id, end, job.digests[end - job.start])
            return "nothing"
        known = [m for m in recalled.memories if _seen_by(job, m, full)]
        transcript = _transcript(read)
        ranked = await asyncio.to_thread(_most_relevant, known, transcript)  # off the loop
        answer = await self._ask(job, transcript, ranked)
        origin = Origin(
            job.session_id,
            job.last_message_id if end == end_of_job else None,
            job.root,
            end,
            job.digests[end - job.start],
        )
        try:
            facts = LearnedFacts.model_validate_json(answer).facts
        except ValidationError as exc:
            log.warning("memory reading of session %s: malformed answer: %s", job.session_id, exc)
            await self._marked(job.session_id, origin.covered, origin.digest)  # same text fails
            return "malformed"

        async def still_current() -> bool:
            return _holds_job(job, await self._digests(job), end)

        stored = await self._merge(job, facts, origin, full, still_current)
        if stored is None:
            return "stale"  # edited or deleted during the call: what was read is not said
        await self._marked(job.session_id, origin.covered, origin.digest)
        return "learned" if stored else "nothing"

    async def _digests(self, job: "Job | JobDraft") -> "list[str] | Gone | None":
        """The conversation as stored now: GONE when deleted (or no longer the job's owner's:
        adopted at a sign-in); for a conversation kept on the server, the digests of its
        messages from the first (None: a client's record, whose client holds the
        conversation)."""
        meta_key = f"chat:session:{job.session_id}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(meta_key, ["owner", "mode"])
            pipe.lrange(f"{meta_key}:messages", 0, -1)
            (owner, mode), raws = await pipe.execute()
        if owner != job.user_id:
            return GONE
        if mode != "server":
            return None
        stored = [json.loads(raw) for raw in raws]
        return prefix_digests([{"role": m["role"], "content": m["content"]} for m in stored])

    async def _owned_now(self, job: Job) -> Job:
        """The job as its conversation's owner now has it: a browser that signed in since it
        was made (the conversation adopted) has it read for the account, into its memories."""
        owner: str | None = await self.redis.hget(f"chat:session:{job.session_id}", "owner")  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        if owner is None or owner == job.user_id:
            return job
        return replace(job, user_id=owner, address=None, caller=owner)  # a signed-in caller

    async def _still_unread(self, job: Job) -> Job:
        """The job less the messages another reading has read since it was made."""
        meta_key = f"chat:session:{job.session_id}"
        raw: str | None = await self.redis.hget(meta_key, "memory_marks")  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        marks = read_marks({"memory_marks": raw or ""})
        read = max(
            (
                n
                for n, digest in marks
                if job.start <= n < job.start + len(job.digests)
                and job.digests[n - job.start] == digest
            ),
            default=job.start,
        )
        skip = read - job.start
        return replace(job, start=read, turns=job.turns[skip:], digests=job.digests[skip:])

    def _block(self, job: Job) -> list[Message]:
        """The unread messages one call can take, from the first (a message too long for a
        call alone is taken whole: the server truncates, as it would a summary's)."""
        room = int(job.window * self.settings.summary_trigger_ratio)
        room -= self.settings.memory_learn_max_tokens + 1000  # instructions and known facts
        estimate, taken = TokenEstimator(None), list[Message]()
        for turn in job.turns:
            room -= estimate.text(turn["content"]) + 4
            if taken and room < 0:
                break
            taken.append(turn)
        return taken

    async def _ask(self, job: Job, transcript: str, known: list[Remembered]) -> str:
        shown = "\n".join(f"- [{m.key or 'user'}] {m.text}" for m in known) or "(none yet)"
        prompt = f"Known facts:\n{shown}\n\nNew part of the conversation:\n{transcript}"
        request = LlmRequest(
            model=job.model,
            messages=[
                {"role": "system", "content": LEARN_INSTRUCTIONS},
                {"role": "user", "content": prompt},
            ],
            temperature=LEARN_TEMPERATURE,
            max_tokens=self.settings.memory_learn_max_tokens,
            context_tokens=job.window,
            schema=FACTS_SCHEMA,
        )
        share = (
            self.admission.background(job.caller, job.address)
            if self.admission
            else nullcontext(True)
        )
        async with share as taken:  # one of the caller's calls in flight, as a turn is
            if not taken:
                raise PutOff()
            await self.rate.hit(job.caller)  # LLM work the caller causes, as a summary is
            async with self.gate.slot(job.caller, background=True):  # behind every turn
                reply = await self.llm.complete(request)
        LLM_TOKENS.labels(job.model, "memory_prompt").inc(max(0, reply.prompt_tokens))
        LLM_TOKENS.labels(job.model, "memory_completion").inc(max(0, reply.completion_tokens))
        return reply.content

    def _merge_lock(self, user_id: str, character_id: str) -> AbstractAsyncContextManager[None]:
        """One merge (or forgetting) at a time per (user, character), across replicas: two
        conversations read at once must not both store one new fact, and an edit's
        forgetting must not pass a merge of what it edited away."""
        lock = f"memories:merge:{user_id}:{character_id}"
        return redis_lock(self.redis, lock, expire_s=MERGE_LOCK_S, wait_s=MERGE_LOCK_S)

    async def _merge(
        self,
        job: "Job | JobDraft",
        facts: list[LearnedFact],
        origin: Origin,
        full: list[str] | None,
        still_current: Callable[[], Awaitable[bool]] | None = None,
    ) -> int | None:
        """Stores what is new of `facts`: how many memories it wrote; None when the
        conversation changed (`still_current`, asked under the lock) and nothing was."""
        async with self._merge_lock(job.user_id, job.character_id):
            if still_current is not None and not await still_current():
                return None
            return await self._merged(job, facts, origin, full)

    async def _merged(
        self,
        job: "Job | JobDraft",
        facts: list[LearnedFact],
        origin: Origin,
        full: list[str] | None,
    ) -> int:
        """Each fact against the memories this conversation sees (another branch's are not
        its timeline: a fact of its own is a memory of its own, not a change of theirs)."""
        owner = Owner(job.user_id, job.address)
        recalled = await self.store.recall(job.user_id, job.character_id)
        memories = [m for m in recalled.memories if _seen_by(job, m, full)]
        # Each memory's terms once per merge, in a thread (the terms of 2,000 memories for each
        # of 16 facts, on the event loop, stalled every reply's stream for half a second).
        known = await asyncio.to_thread(lambda: {m.id: frozenset(terms(m.text)) for m in memories})
        written = 0
        for fact in facts:
            try:
                made = await self._merge_one(owner, job.character_id, fact, origin, memories, known)
            except MemoryQuotaExceeded as exc:
                log.info("memories of %s not stored: %s", owner.user_id, exc.message)
                break
            except AppError as exc:  # deleted meanwhile, the memories' share of Redis full
                log.info("a memory of %s not stored: %s", owner.user_id, exc.message)
                continue
            if made is not None:
                written += 1
                memories = [m for m in memories if m.id != made.id] + [made]
                known[made.id] = frozenset(terms(made.text))
        return written

    async def _merge_one(
        self,
        owner: Owner,
        character_id: str,
        fact: LearnedFact,
        origin: Origin,
        memories: list[Remembered],
        known: dict[str, frozenset[str]],
    ) -> Remembered | None:
        """The memory `fact` wrote (None: nothing new); `known`: the terms of `memories`."""
        text = fact.text.strip()[: self.settings.memory_max_chars]
        slot = next((m for m in memories if m.source == "learned" and m.key == fact.key), None)
        if slot is not None:
            # Any change is a new value (a birthday's month: one term of six), not a near
            # duplicate; the same fact said again keeps where it was first learned.
            if _normalized(slot.text) == _normalized(text):
                return None
            if not await self.store.relearn(slot.id, owner, text, origin):  # a newer value
                return None  # the user took it over meanwhile
            return replace(slot, text=text, origin=origin)
        if await asyncio.to_thread(_near_duplicate, list(known.values()), frozenset(terms(text))):
            return None  # known already (the user's own, or learned under another key)
        record = await self.store.create(
            owner, character_id, text, learned=(fact.kind, fact.key, origin)
        )
        return Remembered.of(record)

    async def take(
        self, draft: "JobDraft", digests: list[str], start: int, end: int, facts: list[LearnedFact]
    ) -> None:
        """The facts a summary made ahead listed for messages `start` to `end` (`digests`:
        the conversation's). Those messages count as read when nothing before them is unread.
        Nothing is stored when they changed during the call (edited, deleted), as a reading's."""
        origin = Origin(draft.session_id, None, draft.root, end, digests[end])

        async def still_current() -> bool:
            whole = await self._digests(draft)
            if not isinstance(whole, list):
                return whole is not GONE  # a client's record holds what its client sent
            return end < len(whole) and whole[end] == digests[end]

        if await self._merge(draft, facts, origin, digests, still_current) is None:
            MEMORY_LEARNING.labels("stale").inc()
            return
        MEMORY_LEARNING.labels("with_summary").inc()
        raw: str | None = await self.redis.hget(f"chat:session:{draft.session_id}", "memory_marks")  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        if start <= resume_at(read_marks({"memory_marks": raw or ""}), digests) < end:
            await self._marked(draft.session_id, origin.covered, origin.digest)

    async def forget_edited(
        self,
        owner: Owner,
        character_id: str,
        session_id: str,
        memories: list[Remembered],
        job: "Job | None",
        full: list[str] | None,
    ) -> None:
        """Forgets what this conversation taught from messages it no longer holds (edited or
        deleted since): by its digests from the first message (`full`), else by the job's
        from its start. A memory it relearned goes back to what it said before (another
        conversation's text stays); one it first learned goes."""
        gone = [
            m.id
            for m in memories
            if m.source == "learned"
            and m.origin is not None
            and m.origin.session_id == session_id
            and not _held(m.origin, job, full)
        ]
        if gone:

            def edited_away(origin: Origin) -> bool:
                return origin.session_id == session_id and not _held(origin, job, full)

            async with self._merge_lock(owner.user_id, character_id):
                await self.store.forget(gone, owner, edited_away)

    async def prune_marks(self, session_id: str, full: list[str]) -> None:
        """After an edit: the marks the conversation no longer holds go (else marks of a
        longer past would crowd out the ones that count)."""
        meta_key = f"chat:session:{session_id}"
        raw: str | None = await self.redis.hget(meta_key, "memory_marks")  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        marks = read_marks({"memory_marks": raw or ""})
        kept = [[n, d] for n, d in marks if n < len(full) and full[n] == d]
        if len(kept) < len(marks):
            await self.redis.hset(meta_key, "memory_marks", json.dumps(kept))  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"

    async def _marked(
        self, session_id: str, covered: int, digest: str, paused: bool = False
    ) -> None:
        """Remembers how far the session was read (only while the session exists); `paused`:
        by a turn whose memory did not learn, whose end is also kept as `memory_paused_at`."""
        args: list[EncodableT] = [covered, digest, KEPT_MARKS, "1" if paused else ""]
        await self._mark(keys=[f"chat:session:{session_id}"], args=args)


def lineage_origin(memory: Remembered, root: str) -> Origin | None:
    """Where a memory learned in the lineage `root` was read; None for any other memory
    (the user's, another lineage's), which every conversation of the lineage sees."""
    origin = memory.origin
    if memory.source != "learned" or origin is None or origin.root != root:
        return None
    return origin


def _seen_by(job: "Job | JobDraft", memory: Remembered, full: list[str] | None) -> bool:
    """Whether the conversation of `job` sees `memory`: any but a learned one of its own
    lineage whose messages it does not hold (another branch's future, an edited-away fact).
    `full`: its digests from the first message, when known."""
    origin = lineage_origin(memory, job.root)
    return origin is None or _held(origin, job if isinstance(job, Job) else None, full)


def _held(origin: Origin, job: "Job | None", full: list[str] | None) -> bool:
    """Whether the conversation holds the messages `origin` was read from: by its digests
    from the first message, else by the job's (before the job's start its marks vouch,
    which they do only for its own messages: a client's record has no branches)."""
    if full is not None:
        return holds(0, full, origin)
    if job is None:
        return True
    return holds(job.start, job.digests, origin)


def _holds_job(job: "Job", whole: "list[str] | Gone | None", end: int) -> bool:
    """Whether the stored conversation still holds the job's messages up to `end`."""
    if whole is GONE:
        return False
    if not isinstance(whole, list):
        return True  # a client's record
    return end < len(whole) and whole[end] == job.digests[end - job.start]


def _normalized(text: str) -> str:
    """A fact's text as compared for a change: case and spacing aside."""
    return " ".join(text.casefold().split())


def _transcript(block: list[Message]) -> str:
    """The messages as the model reads them: each quoted, so a message cannot pass a line
    of its own off as the user's (a card's greeting is its author's, not the user's)."""
    return "\n".join(
        f"{SPEAKERS[t['role']]}: {json.dumps(t['content'], ensure_ascii=False)}" for t in block
    )


def _free(_: str) -> int:
    """No cost: every known fact relevant to a reading is a candidate to show it."""
    return 0


def holds(start: int, digests: list[str], origin: Origin) -> bool:
    """Whether a conversation (`digests[i]`: its messages up to `start` + i) still holds the
    messages `origin` was read from; before `start` the last matching mark vouches."""
    at = origin.covered - start
    if at < 0:
        return True
    return at < len(digests) and digests[at] == origin.digest


@dataclass(frozen=True)
class JobDraft:
    """A job but for what depends on how far its conversation was read."""

    session_id: str
    user_id: str
    address: str | None
    caller: str
    character_id: str
    root: str
    last_message_id: str | None
    model: str
    window: int
    marks: tuple[tuple[int, str], ...] = ()  # how far it was read, as the turn found it
    # The end of the last turn whose memory did not learn (`memory_paused_at`; 0: none).
    paused_at: int = 0
    # A client's conversation is never read below `paused_at`: its messages carry no flags,
    # and a client that changes its earlier history voids the marks past the change.
    floor: int = 0

    def at(self, start: int, turns: list[Message], digests: list[str], unlearned: list[int]) -> Job:
        return Job(
            self.session_id,
            self.user_id,
            self.address,
            self.caller,
            self.character_id,
            self.root,
            start,
            turns,
            digests,
            unlearned,
            self.last_message_id,
            self.model,
            self.window,
        )


DUE = "chat:memory:due"


class Gone:
    """A conversation deleted since its job was made."""


GONE = Gone()


def job_key(session_id: str) -> str:
    return f"chat:memory:job:{session_id}"


# KEYS: the session's hash. ARGV: messages read, their digest, marks kept. Puts the mark in
# its place by count (one of the same count is replaced; marks past it stay: a reading that
# ends below a later one, or a turn's mark of what memory must not learn, is never undone)
# while the session exists; the lowest go past the count kept.
SAVE_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local marks = cjson.decode(redis.call('HGET', KEYS[1], 'memory_marks') or '[]')
local at, kept = tonumber(ARGV[1]), {}
local placed = false
for _, mark in ipairs(marks) do
  local n = tonumber(mark[1])
  if not placed and n >= at then
    table.insert(kept, {at, ARGV[2]})
    placed = true
  end
  if n ~= at then table.insert(kept, mark) end
end
if not placed then table.insert(kept, {at, ARGV[2]}) end
while #kept > tonumber(ARGV[3]) do table.remove(kept, 1) end
redis.call('HSET', KEYS[1], 'memory_marks', cjson.encode(kept))
if ARGV[4] == '1' then  -- read while memory did not learn: how far it ever went, kept
  local paused = tonumber(redis.call('HGET', KEYS[1], 'memory_paused_at') or '0')
  if at > paused then redis.call('HSET', KEYS[1], 'memory_paused_at', at) end
end
return 1
"""
