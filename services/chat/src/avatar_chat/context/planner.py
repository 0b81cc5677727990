"""Fitting a conversation into the model's context window.

A prompt (system + summary + turns + max_tokens reserved for the reply) that would reach
`SUMMARY_TRIGGER_RATIO` of the window is due for summarizing: every turn but the most recent
`KEEP_RECENT_TURNS` is folded into one summary (a turn is one message, the user's or the
character's), carried in the system message. Summaries come from the cache (`summaries`)
whenever one still matches the conversation; a new one extends the longest matching one with
only the newly aged turns, in as many LLM calls as the window needs. Summarizing must never
fail the chat: when it cannot be done, the oldest turns that do not fit are dropped instead
and the reply says so; the summary is tried again on the next request. Each summary call
counts in the caller's chat rate (CHAT_RATE_PER_MIN): past it, the same.

The trigger ratio leaves room for the conversation to grow between summaries; what is sent
is only cut when it would not fit the window itself (less a small headroom, as estimates are
not exact). Cuts fall before a user's turn, as some chat templates (Gemma's on vLLM) insist
on user and assistant turns alternating.

Summarizing ahead (SUMMARY_AHEAD_RATIO, 0 = off): after a reply, a conversation past that
lower share of the window has its aged turns summarized in the background, so the turn that
reaches the trigger finds its summary ready. A turn then waits for a summary only when its
prompt would not fit the window without one (the background one failed, or lags behind); on
the way it uses the newest ready summary that matches. A background summary waits behind
every chat turn for its LLM slot (background work holds at most all the slots but one), holds
one of its caller's calls in flight (LLM_CALLS_PER_USER, LLM_CALLS_PER_ADDRESS: at the cap,
it is left for a later reply), runs one per session at a time across replicas (the
session's lock, tried once: a held one means someone is on it), and its failure changes
nothing for the user: the next reply tries again. When the conversation's long-term memory is
on (`Conversation.learning`), the same call also lists the facts of the turns it summarizes
(`memory.learning`): one call does both, unless the conversation ever held a turn whose
memory did not learn (read_only, off: `memory_paused_at`, or a message flagged `unlearned`):
then the summary alone, as the call sees the summary so far, which may hold what was said.
The summary alone too when the summary so far leaves the call no room for the facts' answer
(a small window): the memory's own reading lists them later.
"""

import asyncio
import json
import logging
import re
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from pydantic import ValidationError
from redis.exceptions import RedisError

from avatar_chat.context.summaries import (
    NO_SUMMARY,
    Summary,
    SummaryStore,
    best_match,
    prefix_digests,
)
from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.limits.admission import Admission, PutOff
from avatar_chat.llm import LlmClient, LlmRequest
from avatar_chat.memory.learning import (
    ALSO_FACTS,
    SUMMARY_AND_FACTS_SCHEMA,
    JobDraft,
    LearnedFact,
    MemoryLearner,
    SummaryAndFacts,
    resume_at,
)
from avatar_chat.metrics import LLM_TOKENS, SUMMARIES
from avatar_chat.settings import ChatSettings
from avatar_shared.errors import AppError, ValidationFailed
from avatar_shared.gate import Gate
from avatar_shared.locks import LockTimeout
from avatar_shared.rate import RateLimit
from avatar_shared.timestamps import utc_now

log = logging.getLogger(__name__)

Message = dict[str, str]

SUMMARY_INSTRUCTIONS = """\
You keep the memory of a long role-play conversation between a user and a character.
Write the summary of the conversation so far: the earlier summary, if there is one, extended
with the new part. Keep every name; the facts learned about the user and the character;
promises, plans and open questions; the state of their relationship; and the user's stated
likes, dislikes and preferences. Drop small talk. Write plain prose in the language the
conversation is written in, in at most {words} words, and answer with the summary only."""
SPEAKERS = {"user": "User", "assistant": "Character"}
SUMMARY_TEMPERATURE = 0.3  # faithful rather than creative
HEADROOM = 0.05  # of the window, kept free for estimation error
SENTENCE_END = re.compile(r"[.!?。！？…][\"')\]」』]*\s*$")
MIN_BLOCK_TOKENS = 64  # below this, a summary call could not take even one short turn
# Background summaries one replica runs at once: each holds an LLM slot only when no chat
# turn waits for one, but a burst of long conversations must not pile up tasks without end
# (past it, a conversation is summarized after a later reply, or by its turn if it must).
MAX_AHEAD_TASKS = 64


@dataclass(frozen=True)
class Conversation:
    """One turn's conversation, as the planner takes it."""

    session_id: str
    system: str  # the system prompt, before any summary is added to it
    turns: list[Message]  # as the client sent them, the new user's turn last
    model: str
    max_tokens: int  # kept free for the reply
    window: int  # the model's context window, in tokens
    estimate: TokenEstimator  # calibrated for this session and model
    reserved: int = 0  # tokens of what goes around the turns besides the system message
    caller: str = ""  # whose rate a summary call counts in, and whose turn it waits in line
    address: str | None = None  # an anonymous caller's address key: its calls in flight
    covered_before: int = 0  # turns the summary of the session's previous reply covered
    learning: JobDraft | None = None  # memory on: a summary made ahead lists facts too
    # Positions in `turns` of messages said while memory was read_only or off (flagged
    # `unlearned`): a summary made ahead of a block with one before its end lists no facts.
    unlearned: frozenset[int] = frozenset()
    existed: bool = False  # the session's hash was there when the turn began


@dataclass(frozen=True)
class Context:
    messages: list[Message]  # what the LLM gets, the system message first
    summarized: bool  # the prompt uses a newer summary than the previous reply's did
    truncated: bool  # turns were dropped because they did not fit
    covered: int  # turns folded into the summary used (0: none)


def with_summary(system: str, summary: Summary) -> Message:
    if not summary.exists:
        return {"role": "system", "content": system}
    return {"role": "system", "content": f"{system}\n\n# What happened so far\n{summary.content}"}


class ContextPlanner:
    def __init__(
        self,
        llm: LlmClient,
        gate: Gate,
        store: SummaryStore,
        rate: RateLimit,
        settings: ChatSettings,
        learner: MemoryLearner | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.llm = llm
        self.admission = admission  # a summary made ahead counts in its caller's calls
        self.learner = learner  # takes the facts a summary made ahead lists
        self.gate = gate
        self.store = store
        self.rate = rate  # the caller's chat rate
        self.settings = settings
        self._ahead: set[asyncio.Task[None]] = set()  # background summaries running

    async def fit(self, talk: Conversation, cached: dict[int, Summary]) -> Context:
        """The messages to send: the conversation whole while it is short, else with its
        older turns summarized (`cached`: the session's summaries as loaded)."""
        check_room(talk)
        trigger = trigger_tokens(talk, self.settings.summary_trigger_ratio)
        whole = [with_summary(talk.system, NO_SUMMARY), *talk.turns]
        if talk.estimate.messages(whole) < trigger:
            return Context(whole, summarized=False, truncated=False, covered=0)
        digests, aged = prefix_digests(talk.turns), self._aged(talk.turns)
        summary = best_match(cached, digests, aged)
        with_cached = [with_summary(talk.system, summary), *talk.turns[summary.covered :]]
        limit = int(talk.window * (1 - HEADROOM)) - talk.max_tokens - talk.reserved
        # Summarized ahead, a turn waits only for a summary it cannot do without; else (off)
        # as soon as its prompt reaches the trigger, as before.
        due = limit if self.settings.summary_ahead_ratio else trigger
        made = False
        if aged > summary.covered and talk.estimate.messages(with_cached) >= due:
            summary, made = await self._summarize(talk, summary, digests, aged)
        return assemble(talk, summary, limit, made)

    def summarize_ahead(self, talk: Conversation) -> None:
        """After a reply is recorded (`talk`: the conversation with the reply): when it is
        past SUMMARY_AHEAD_RATIO of the window, its aged turns are summarized in a background
        task, so a later turn finds the summary ready."""
        ratio = self.settings.summary_ahead_ratio
        whole = [with_summary(talk.system, NO_SUMMARY), *talk.turns]
        if not ratio or talk.estimate.messages(whole) < trigger_tokens(talk, ratio):
            return
        if len(self._ahead) >= MAX_AHEAD_TASKS:
            log.info("summary of session %s left for later: too many running", talk.session_id)
            return
        task = asyncio.create_task(self._ahead_of(talk), name=f"summary-{talk.session_id}")
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _ahead_of(self, talk: Conversation) -> None:
        """The background summary, from the summaries stored by then."""
        digests, aged = prefix_digests(talk.turns), self._aged(talk.turns)
        try:
            await self._summarize(talk, NO_SUMMARY, digests, aged, ahead=True)
        except Exception:  # a bug: no one awaits this task to hear of it otherwise
            SUMMARIES.labels("ahead", "failed").inc()
            log.exception("summary of session %s failed", talk.session_id)

    async def close(self) -> None:
        """At shutdown: the background summaries stop (their locks expire by themselves, and
        a later reply makes what they did not)."""
        for task in self._ahead:
            task.cancel()
        await asyncio.gather(*self._ahead, return_exceptions=True)

    def _aged(self, turns: list[Message]) -> int:
        """How many turns are old enough to summarize: all but the most recent
        KEEP_RECENT_TURNS, and the verbatim part starts with a user's turn."""
        cut = len(turns) - self.settings.keep_recent_turns
        while cut > 0 and turns[cut]["role"] != "user":
            cut -= 1
        return max(cut, 0)

    async def _summarize(
        self,
        talk: Conversation,
        summary: Summary,
        digests: list[str],
        aged: int,
        ahead: bool = False,
    ) -> tuple[Summary, bool]:
        """Extends `summary` to cover `aged` turns, under the session's lock. Returns the
        longest matching summary there is afterwards and whether this request made one; a
        failure is logged and keeps whatever progress was made. `ahead`: in the background,
        only if the lock is free (else someone is on it) and the conversation still needs it
        with the summaries stored by then."""
        made, when = False, "ahead" if ahead else "in_turn"
        try:
            async with asyncio.timeout(self.settings.summary_timeout_s):
                async with self.store.lock(talk.session_id, wait=not ahead):
                    known = await self.store.load(talk.session_id)  # the last holder's work
                    found = best_match(known, digests, aged)
                    summary = found if found.exists else summary
                    if ahead and not self._due_ahead(talk, summary):
                        SUMMARIES.labels(when, "skipped").inc()  # made meanwhile, say
                        return summary, False
                    while summary.covered < aged:
                        # Facts too when the block holds messages memory has not read, and
                        # the conversation never held one it must never read: the call also
                        # sees the summary so far, which holds all before the block. A call
                        # that may ask for them leaves room for their answer; when a long
                        # summary so far leaves too little, the summary alone (the memory's
                        # own reading lists the facts), rather than no summary at all.
                        draft = talk.learning if ahead and self.learner else None
                        may_learn = (
                            draft is not None
                            and not draft.paused_at
                            and self._room(talk, summary, with_facts=True) >= MIN_BLOCK_TOKENS
                        )
                        block = self._next_block(talk, summary, aged, may_learn)
                        start, end = summary.covered, summary.covered + len(block)
                        unread = (
                            draft is not None
                            and may_learn
                            and not any(n < end for n in talk.unlearned)
                            and resume_at(list(draft.marks), digests) < end
                        )
                        content, facts = await self._ask(talk, summary, block, ahead, unread)
                        made_now = Summary(end, digests[end], content, utc_now())
                        if not await self.store.save(
                            talk.session_id,
                            made_now,
                            known,
                            base=start,
                            if_session=ahead or talk.existed,
                        ):
                            SUMMARIES.labels(when, "skipped").inc()
                            break  # deleted meanwhile: nothing to summarize for
                        summary, made = made_now, True
                        if facts is not None and self.learner and talk.learning:
                            await self.learner.take(talk.learning, digests, start, end, facts)
        except PutOff:  # the caller's calls in flight are at their cap: a later reply's
            SUMMARIES.labels(when, "skipped").inc()
        except LockTimeout:
            if ahead:  # another request or replica is summarizing it: theirs will do
                SUMMARIES.labels(when, "skipped").inc()
            else:  # waited the whole SUMMARY_TIMEOUT_S for another's summary
                SUMMARIES.labels(when, "failed").inc()
                log.warning("summarizing session %s: its lock stayed held", talk.session_id)
        except (AppError, TimeoutError, RedisError, CannotSummarize) as exc:
            why = str(exc) or type(exc).__name__  # a timeout says nothing by itself
            SUMMARIES.labels(when, "failed").inc()
            log.warning(
                "summarizing session %s failed (retried next time, %s): %s",
                talk.session_id,
                when,
                why,
            )
        if made:
            SUMMARIES.labels(when, "made").inc()
        return summary, made

    def _share(self, talk: Conversation, ahead: bool) -> AbstractAsyncContextManager[bool]:
        """A summary made ahead holds one of its caller's calls in flight (a turn's own
        summary is within the turn's)."""
        if not ahead or self.admission is None:
            return nullcontext(True)
        return self.admission.background(talk.caller, talk.address)

    def _due_ahead(self, talk: Conversation, summary: Summary) -> bool:
        """Whether the conversation, with `summary`, has grown past SUMMARY_AHEAD_RATIO."""
        with_summary_ = [with_summary(talk.system, summary), *talk.turns[summary.covered :]]
        ahead = trigger_tokens(talk, self.settings.summary_ahead_ratio)
        return talk.estimate.messages(with_summary_) >= ahead

    def _instructions(self, with_facts: bool = False) -> Message:
        words = self.settings.summary_max_tokens // 3  # Korean costs 2-3 tokens a word
        text = SUMMARY_INSTRUCTIONS.format(words=words)
        return {"role": "system", "content": text + ALSO_FACTS if with_facts else text}

    def _answer_tokens(self, with_facts: bool) -> int:
        """max_tokens of a summary call: the summary's, and the facts' when it lists them."""
        facts = self.settings.memory_learn_max_tokens if with_facts else 0
        return self.settings.summary_max_tokens + facts

    def _room(self, talk: Conversation, summary: Summary, with_facts: bool) -> int:
        """Tokens of turns one summary call extending `summary` can take within the trigger
        share of the window (less the headroom for estimation error, at a ratio near 1: a
        model server refuses a call past its window), with its answer (`with_facts`: the
        facts' too) and instructions."""
        fixed = [self._instructions(with_facts), {"role": "user", "content": summary.content}]
        share = min(self.settings.summary_trigger_ratio, 1 - HEADROOM)
        answer_and_fixed = self._answer_tokens(with_facts) + talk.estimate.messages(fixed)
        return int(talk.window * share) - answer_and_fixed

    def _next_block(
        self, talk: Conversation, summary: Summary, aged: int, with_facts: bool = False
    ) -> list[str]:
        """Transcript lines of the next aged turns, as many as one summary call can take
        (`_room`); ending before a user's turn (a single turn too long for a call is
        clipped)."""
        room = self._room(talk, summary, with_facts)
        if room < MIN_BLOCK_TOKENS:
            raise CannotSummarize(f"{talk.window}-token window is too small")
        start = summary.covered
        lines: list[str] = []
        for turn in talk.turns[start:aged]:
            line = f"{SPEAKERS[turn['role']]}: {turn['content']}"
            cost = talk.estimate.text(line) + 1  # the line break
            if not lines and cost > room:
                line = clip(line, room, talk.estimate)
            elif cost > room:
                break
            lines.append(line)
            room -= cost
        while len(lines) > 1 and talk.turns[start + len(lines)]["role"] != "user":
            lines.pop()
        return lines

    async def _ask(
        self,
        talk: Conversation,
        summary: Summary,
        block: list[str],
        ahead: bool,
        with_facts: bool = False,
    ) -> tuple[str, list[LearnedFact] | None]:
        """The summary extended with `block`, and (`with_facts`) the facts it holds."""
        earlier = f"Summary so far:\n{summary.content}\n\n" if summary.exists else ""
        prompt = earlier + "New part of the conversation:\n" + "\n".join(block)
        summary_request = LlmRequest(
            model=talk.model,
            messages=[self._instructions(with_facts), {"role": "user", "content": prompt}],
            temperature=SUMMARY_TEMPERATURE,
            max_tokens=self._answer_tokens(with_facts),
            context_tokens=talk.window,
            schema=SUMMARY_AND_FACTS_SCHEMA if with_facts else None,
        )
        async with self._share(talk, ahead) as taken:
            if not taken:  # the caller's calls in flight are at their cap
                raise PutOff()
            # LLM work the caller causes (an edit early in a long conversation makes every
            # summary after it stale): past their rate, the summary waits for a later turn.
            await self.rate.hit(talk.caller)
            # In the background, behind every chat turn waiting for a slot: users go first.
            async with self.gate.slot(talk.caller, background=ahead):
                reply = await self.llm.complete(summary_request)
        LLM_TOKENS.labels(talk.model, "summary_prompt").inc(max(0, reply.prompt_tokens))
        LLM_TOKENS.labels(talk.model, "summary_completion").inc(max(0, reply.completion_tokens))
        text, facts = reply.content, None
        if with_facts:
            text, facts = summary_and_facts(reply.content)
        content = whole_sentences(text.strip())
        if not content:
            raise CannotSummarize("the model answered an empty summary")
        return content, facts


def summary_and_facts(answer: str) -> tuple[str, list[LearnedFact] | None]:
    """A combined answer's summary, and its facts when they are well formed (facts that are
    not never cost the summary: they are read again by the memory's own reading)."""
    try:
        both = SummaryAndFacts.model_validate_json(answer)
    except ValidationError:
        try:
            summary = json.loads(answer).get("summary")
        except (ValueError, AttributeError):
            summary = None
        if not isinstance(summary, str):
            raise CannotSummarize("the model's summary and facts were not JSON") from None
        log.warning("a summary's facts were malformed: left for the memory's reading")
        return summary, None
    return both.summary, both.facts


def trigger_tokens(talk: Conversation, ratio: float) -> int:
    """What the system message and the turns may take before they are due for summarizing."""
    return int(talk.window * ratio) - talk.max_tokens - talk.reserved


def check_room(talk: Conversation) -> None:
    """The system message, the new message and the reply must fit the window at all: no
    summary can make room for them. Less the headroom `assemble` keeps, as it never cuts
    the new message: else what passed here could be sent larger than the window holds."""
    first_and_last = [with_summary(talk.system, NO_SUMMARY), talk.turns[-1]]
    needed = talk.estimate.messages(first_and_last) + talk.max_tokens + talk.reserved
    room = int(talk.window * (1 - HEADROOM))
    if needed > room:
        raise ValidationFailed(
            f"max_tokens: the persona, the last message and max_tokens ({talk.max_tokens}) "
            f"need about {needed} tokens, more than the {room} the model's context window of "
            f"{talk.window} leaves"
        )


def assemble(talk: Conversation, summary: Summary, limit: int, made: bool) -> Context:
    """The summary and the turns after it, less the oldest of those that do not fit within
    `limit` tokens (cut before a user's turn); last of all, the summary itself. `made`: this
    request made the summary (after an edit, one may cover no more than the last one did)."""
    covered, estimate = summary.covered, talk.estimate
    head, kept = with_summary(talk.system, summary), talk.turns[covered:]
    start = 0
    while start < len(kept) - 1 and estimate.messages([head, *kept[start:]]) >= limit:
        start = next_user_turn(kept, start + 1)
    without_summary = summary.exists and estimate.messages([head, *kept[start:]]) >= limit
    if without_summary:
        head, covered = with_summary(talk.system, NO_SUMMARY), 0
    newer = covered > 0 and (made or covered > talk.covered_before)
    return Context([head, *kept[start:]], newer, start > 0 or without_summary, covered)


def next_user_turn(turns: list[Message], index: int) -> int:
    """The first user's turn at or after `index`; the last turn (the user's) at the latest."""
    while index < len(turns) - 1 and turns[index]["role"] != "user":
        index += 1
    return index


def whole_sentences(text: str) -> str:
    """`text` without a last sentence cut short (a summary that ran into max_tokens)."""
    if SENTENCE_END.search(text):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?。！？…]", text)]
    return text[: ends[-1]] if ends else text


class CannotSummarize(Exception):
    pass


def clip(text: str, tokens: int, estimate: TokenEstimator) -> str:
    """`text` cut short to about `tokens` tokens (its beginning, which sets the scene)."""
    while text and estimate.text(text) > tokens:
        text = text[: max(int(len(text) * tokens / estimate.text(text)) - 1, 0)]
    return text + " ..."
