"""A chat turn (`POST /api/chat`), top to bottom, in the order it happens:

1. check the request's sizes and its model (offered ones only, from a cached list);
2. admit it: the caller's rate, their turns in flight (a lease), room for conversations,
   the concurrent-session limit and the caller's (and address's) share of it, in one atomic
   step. A new session's place is provisional until its turn succeeds; nothing else is
   spent on a request that is refused;
3. load the session and the character, and plan the prompt: the conversation fitted into
   the model's window, older turns summarized when due;
4. generate in one of this replica's LLM slots, waiting in the caller's line for one (a
   streamed reply is spoken per sentence as it comes);
5. record the turn (which ends its lease), and speak a whole reply;
6. release: leaving the blocks gives back the slot, and a failed turn's lease, its new
   session's place and summaries.

No turn is stored before the reply succeeded. (Summaries made on the way are cached at once:
they hold for that conversation whatever becomes of the reply.)
"""

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from avatar_chat.context.planner import Context, Conversation
from avatar_chat.context.tokens import TokenEstimator, learn_calibration
from avatar_chat.llm import LlmReply, LlmRequest
from avatar_chat.prompt.alternation import alternating
from avatar_chat.prompt.builder import Limits, Prompt, Scene, build_prompt
from avatar_chat.schemas import (
    ChatReply,
    ChatRequest,
    PromptReceipt,
    PromptTokens,
    Scenario,
    Usage,
    check_limits,
)
from avatar_chat.service import ChatService
from avatar_chat.store import SessionState, TurnRecord
from avatar_shared.errors import AppError
from avatar_shared.rate import Caller
from avatar_shared.streaming import primed, sse


@dataclass(frozen=True)
class Turn:
    """A planned turn: what the LLM gets, and what it came from."""

    body: ChatRequest
    session_id: str
    voice_id: str | None
    llm_request: LlmRequest
    context: Context  # how the conversation was fitted into the window
    receipt: PromptReceipt  # what the model saw, for the reply

    def record(self, reply: LlmReply) -> TurnRecord:
        """The finished turn, as the session stores it: the user's new message (none when
        the conversation ended with the character's: it spoke again) and the reply."""
        last = self.body.messages[-1]
        said = [{"role": "user", "content": last.content}] if last.role == "user" else []
        return TurnRecord(
            exchanged=[*said, {"role": "assistant", "content": reply.content}],
            model=self.llm_request.model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            summary_covered=self.context.covered,
            calibration=learn_calibration(self.llm_request.messages, reply.prompt_tokens),
        )

    def answer(self, reply: LlmReply, audio_url: str | None, tts_error: str | None) -> ChatReply:
        return ChatReply(
            content=reply.content,
            usage=Usage(
                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens
            ),
            session_id=self.session_id,
            audio_url=audio_url,
            context_summarized=self.context.summarized,
            context_truncated=self.context.truncated,
            tts_error=tts_error,
            context=self.receipt,
        )


async def reply_turn(chat: ChatService, body: ChatRequest, caller: Caller) -> ChatReply:
    session_id, is_new = await _checked(chat, body)
    async with (
        chat.admission.turn(session_id, caller) as lease,
        _undone_on_failure(chat, session_id, is_new),
    ):
        turn = await _planned(chat, body, session_id, is_new, caller)
        async with chat.gate.slot(caller.key):
            reply = await chat.llm.complete(turn.llm_request)
        await chat.record(session_id, caller.identity, turn.record(reply), lease)
        speech = await chat.voice.speak(body, turn.voice_id, reply.content, caller.identity)
    return turn.answer(reply, *speech)


async def stream_turn(
    chat: ChatService, body: ChatRequest, caller: Caller
) -> AsyncGenerator[bytes, None]:
    """The SSE events of a streamed turn, once its first one is ready: a request that fails
    up front (bad input, LLM down, unknown model) gets an ordinary error response; a failure
    after that ends the stream with an `error` event. However the stream ends (a client's
    disconnect included), the upstream request is closed and what the turn held released."""
    return _error_event_on_failure(await primed(_stream_events(chat, body, caller)))


async def _stream_events(
    chat: ChatService, body: ChatRequest, caller: Caller
) -> AsyncGenerator[bytes, None]:
    session_id, is_new = await _checked(chat, body)
    async with (
        chat.admission.turn(session_id, caller) as lease,
        _undone_on_failure(chat, session_id, is_new),
    ):
        turn = await _planned(chat, body, session_id, is_new, caller)
        async with (
            chat.gate.slot(caller.key),
            aclosing(chat.llm.stream(turn.llm_request)) as upstream,
            chat.voice.speaker(body, turn.voice_id, caller.identity) as speaker,
        ):
            async for item in upstream:
                if isinstance(item, LlmReply):  # the last item: the whole reply
                    reply = item
                    break
                yield sse("delta", {"content": item})
                for event in speaker.said(item):
                    yield sse("audio", event)
            async for event in speaker.rest():
                yield sse("audio", event)
        await chat.record(session_id, caller.identity, turn.record(reply), lease)
        speech: tuple[str | None, str | None] = (None, None)
        if not speaker.speaks:  # delayed speech: the URL its audio will have
            speech = await chat.voice.speak(body, turn.voice_id, reply.content, caller.identity)
    done = turn.answer(reply, *speech)
    if speaker.speaks:
        done.audio_urls = speaker.urls
    yield sse("done", done.model_dump())


async def _checked(chat: ChatService, body: ChatRequest) -> tuple[str, bool]:
    """The session id of a well-formed turn for an offered model, and whether it is new. (A
    cached model list: a model the server lacks costs the caller neither rate nor session.)"""
    check_limits(body, chat.settings)
    await chat.catalog.require(body.model or chat.settings.default_model)
    if body.session_id is None:
        return str(uuid.uuid4()), True
    return str(body.session_id), False


async def _planned(
    chat: ChatService, body: ChatRequest, session_id: str, is_new: bool, caller: Caller
) -> Turn:
    """The character and the session loaded, the prompt built from them, and the
    conversation fitted into the window around it."""
    settings, model = chat.settings, body.model or chat.settings.default_model
    card, voice_id = await chat.character(body)
    # A new id has no owner yet; anyone else's session is reported as missing.
    state = SessionState() if is_new else await chat.sessions.load(session_id, caller.user_id)
    window = await chat.windows.tokens(model)
    turns = [{"role": m.role, "content": m.content} for m in body.messages]
    estimate = TokenEstimator(state.calibration(model))
    # Room for the system message's parts: the turns count as they will once summarized
    # (else a long conversation would leave its examples out for good).
    summarized = estimate.messages(turns[-settings.keep_recent_turns :])
    history = min(estimate.messages(turns), summarized + settings.summary_max_tokens)
    limits = Limits(
        room=int(window * settings.summary_trigger_ratio) - body.max_tokens - history,
        lore_budget=int(window * settings.lore_budget_ratio),
        scan_depth=settings.lore_scan_depth,
    )
    user = await chat.user_persona(body, caller.identity)
    prompt = build_prompt(card, user, _scene(body.scenario), turns, limits, estimate.text)
    talk = Conversation(
        session_id=session_id,
        system=prompt.system,
        turns=turns,
        model=model,
        max_tokens=body.max_tokens,
        window=window,
        estimate=estimate,
        reserved=prompt.reserved,
        caller=caller.key,
    )
    context = await chat.context.fit(talk, state.summaries)
    messages = prompt.finish(context.messages)
    if settings.llm_alternate_roles:
        messages = alternating(messages)
    sampling = body.sampling(card.generation)
    # The model must not write the user's lines: it stops where one would begin.
    stop = dict.fromkeys((f"\n{prompt.macros.user}:", *sampling.stop))  # in order, once each
    sampling = replace(sampling, stop=tuple(stop))
    temperature = body.temperature_with(card.generation)
    request = LlmRequest(model, messages, temperature, body.max_tokens, window, sampling)
    receipt = _receipt(prompt, context, estimate, body.max_tokens)
    return Turn(body, session_id, voice_id, request, context, receipt)


def _scene(scenario: Scenario | None) -> Scene:
    if scenario is None:
        return Scene()
    return Scene(scenario.opponent or "", scenario.situation or "", scenario.background or "")


def _receipt(
    prompt: Prompt, context: Context, estimate: TokenEstimator, max_tokens: int
) -> PromptReceipt:
    """What the model saw, by part, from the built prompt and how it was fitted."""
    system, *turns = context.messages
    lore, left_out = prompt.lore.report()
    summary = estimate.text(system["content"]) - estimate.text(prompt.system)
    return PromptReceipt(
        tokens=PromptTokens(
            **prompt.tokens,
            summary=max(summary, 0) if context.covered else 0,
            history=estimate.messages(turns),
            reserved=max_tokens,
        ),
        lore=lore,
        lore_left_out=left_out,
        examples_left_out=prompt.examples_dropped,
    )


@asynccontextmanager
async def _undone_on_failure(
    chat: ChatService, session_id: str, is_new: bool
) -> AsyncIterator[None]:
    """A new session whose turn fails leaves no summary behind."""
    try:
        yield
    except BaseException:
        if is_new:
            with suppress(RedisError):  # else they expire by themselves
                await chat.summaries.forget(session_id)
        raise


async def _error_event_on_failure(
    events: AsyncGenerator[bytes, None],
) -> AsyncGenerator[bytes, None]:
    try:
        async with aclosing(events):
            async for event in events:
                yield event
    except AppError as exc:
        yield sse("error", {"code": exc.code, "message": exc.message})
    except RedisError:
        yield sse("error", {"code": "redis_unavailable", "message": "The reply was not saved."})
