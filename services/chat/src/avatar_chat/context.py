"""Fitting a conversation into the model's context window.

A prompt (system + summary + turns + max_tokens reserved for the reply) that would reach
`SUMMARY_TRIGGER_RATIO` of the window is due for summarizing: every turn but the most recent
`KEEP_RECENT_TURNS` is folded into one summary (a turn is one message, the user's or the
character's), carried in the system message. Summaries come from the cache (`summaries`)
whenever one still matches the conversation; a new one extends the longest matching one with
only the newly aged turns, in as many LLM calls as the window needs. Summarizing must never
fail the chat: when it cannot be done, the oldest turns that do not fit are dropped instead
and the reply says so; the summary is tried again on the next request.
"""

import asyncio
import logging
from dataclasses import dataclass

from redis.exceptions import LockError, RedisError

from avatar_chat.clients import LlmClient, LlmRequest
from avatar_chat.gate import LlmGate
from avatar_chat.sessions import SessionState
from avatar_chat.settings import ChatSettings
from avatar_chat.summaries import Summary, SummaryStore, best_match, prefix_digests
from avatar_chat.tokens import TokenEstimator
from avatar_shared.errors import AppError
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
MIN_BLOCK_TOKENS = 64  # below this, a summary call could not take even one short turn


@dataclass(frozen=True)
class Context:
    messages: list[Message]  # what the LLM gets, the system message first
    summarized: bool  # this request made (part of) the summary it uses
    truncated: bool  # turns were dropped because they did not fit
    covered: int  # turns folded into the summary used (0: none)


def with_summary(system: str, summary: Summary | None) -> Message:
    if summary is None:
        return {"role": "system", "content": system}
    return {"role": "system", "content": f"{system}\n\n# What happened so far\n{summary.content}"}


class ContextPlanner:
    def __init__(
        self, llm: LlmClient, gate: LlmGate, store: SummaryStore, settings: ChatSettings
    ) -> None:
        self.llm = llm
        self.gate = gate
        self.store = store
        self.settings = settings

    async def fit(
        self,
        session_id: str,
        state: SessionState,
        system: str,
        turns: list[Message],
        request: LlmRequest,
    ) -> Context:
        estimate = TokenEstimator(state.chars_per_token(request.model))
        budget = int(request.context_tokens * self.settings.summary_trigger_ratio)
        budget -= request.max_tokens
        if estimate.messages([with_summary(system, None), *turns]) < budget:
            return Context([with_summary(system, None), *turns], False, False, 0)
        digests = prefix_digests(turns)
        summary = best_match(state.summaries, digests)  # from the cache, if one still matches
        start, aged = (summary.covered if summary else 0), self._aged(turns)
        with_cached = [with_summary(system, summary), *turns[start:]]
        summarized = False
        if aged > start and estimate.messages(with_cached) >= budget:
            summary, summarized = await self._summarize(
                session_id, summary, turns, digests, aged, request, estimate
            )
        return self._assemble(system, summary, turns, budget, estimate, summarized)

    def _aged(self, turns: list[Message]) -> int:
        """How many turns are old enough to summarize: all but the most recent
        KEEP_RECENT_TURNS, and the verbatim part starts with a user's turn."""
        cut = len(turns) - self.settings.keep_recent_turns
        while cut > 0 and turns[cut]["role"] != "user":
            cut -= 1
        return max(cut, 0)

    @staticmethod
    def _assemble(
        system: str,
        summary: Summary | None,
        turns: list[Message],
        budget: int,
        estimate: TokenEstimator,
        summarized: bool,
    ) -> Context:
        """The summary and the turns after it, less the oldest of those that do not fit."""
        covered = summary.covered if summary else 0
        head, kept = with_summary(system, summary), turns[covered:]
        dropped = 0
        while len(kept) - dropped > 1 and estimate.messages([head, *kept[dropped:]]) >= budget:
            dropped += 1
        return Context([head, *kept[dropped:]], summarized, dropped > 0, covered)

    async def _summarize(
        self,
        session_id: str,
        summary: Summary | None,
        turns: list[Message],
        digests: list[str],
        aged: int,
        request: LlmRequest,
        estimate: TokenEstimator,
    ) -> tuple[Summary | None, bool]:
        """Extends `summary` to cover `aged` turns, under the session's lock. Returns the
        longest matching summary there is afterwards and whether this request made one; a
        failure is logged and keeps whatever progress was made."""
        made = False
        try:
            async with asyncio.timeout(self.settings.summary_timeout_s):
                async with self.store.lock(session_id):
                    known = await self.store.load(session_id)  # the last holder may have done it
                    summary = best_match(known, digests) or summary
                    while (summary.covered if summary else 0) < aged:
                        block = self._next_block(summary, turns, aged, request, estimate)
                        content = await self._ask(summary, block, request)
                        start = summary.covered if summary else 0
                        end = start + len(block)
                        summary, made = Summary(end, digests[end], content, utc_now()), True
                        await self.store.save(session_id, summary, known, base=start)
        except (AppError, TimeoutError, RedisError, LockError, CannotSummarize) as exc:
            why = str(exc) or type(exc).__name__  # a timeout says nothing by itself
            log.warning("summarizing session %s failed, dropping old turns: %s", session_id, why)
        return summary, made

    def _instructions(self) -> Message:
        words = self.settings.summary_max_tokens // 2
        return {"role": "system", "content": SUMMARY_INSTRUCTIONS.format(words=words)}

    def _next_block(
        self,
        summary: Summary | None,
        turns: list[Message],
        aged: int,
        request: LlmRequest,
        estimate: TokenEstimator,
    ) -> list[str]:
        """Transcript lines of the next aged turns, as many as one summary call can take
        within the trigger share of the window (a single turn too long for it is clipped)."""
        fixed = [
            self._instructions(),
            {"role": "user", "content": summary.content if summary else ""},
        ]
        room = int(request.context_tokens * self.settings.summary_trigger_ratio)
        room -= self.settings.summary_max_tokens + estimate.messages(fixed)
        if room < MIN_BLOCK_TOKENS:
            raise CannotSummarize(f"{request.context_tokens}-token window is too small")
        lines: list[str] = []
        for turn in turns[(summary.covered if summary else 0) : aged]:
            line = f"{SPEAKERS[turn['role']]}: {turn['content']}"
            cost = estimate.text(line) + 1  # the line break
            if not lines and cost > room:
                line = clip(line, room, estimate)
            elif cost > room:
                break
            lines.append(line)
            room -= cost
        return lines

    async def _ask(self, summary: Summary | None, block: list[str], request: LlmRequest) -> str:
        earlier = f"Summary so far:\n{summary.content}\n\n" if summary else ""
        prompt = earlier + "New part of the conversation:\n" + "\n".join(block)
        summary_request = LlmRequest(
            model=request.model,
            messages=[self._instructions(), {"role": "user", "content": prompt}],
            temperature=SUMMARY_TEMPERATURE,
            max_tokens=self.settings.summary_max_tokens,
            context_tokens=request.context_tokens,
        )
        await self.gate.enter()
        try:
            reply = await self.llm.complete(summary_request)
        finally:
            self.gate.leave()
        if not reply.content.strip():
            raise CannotSummarize("the model answered an empty summary")
        return reply.content.strip()


class CannotSummarize(Exception):
    pass


def clip(text: str, tokens: int, estimate: TokenEstimator) -> str:
    """`text` cut short to about `tokens` tokens (its beginning, which sets the scene)."""
    while text and estimate.text(text) > tokens:
        text = text[: max(int(len(text) * tokens / estimate.text(text)) - 1, 0)]
    return text + " ..."
