"""A chat turn (`POST /api/chat`), top to bottom, in the order it happens:

1. check the request's sizes and its model (offered ones only, from a cached list);
2. admit it: the caller's rate, their turns in flight (a lease), room for conversations,
   the concurrent-session limit and the caller's (and address's) share of it, in one atomic
   step. A new session's place is provisional until its turn succeeds; nothing else is
   spent on a request that is refused;
3. load the session and the character, and plan the prompt: the conversation fitted into
   the model's window, older turns summarized when due;
4. generate in one of this replica's LLM slots, waiting in the caller's line for one (a
   streamed reply is spoken per sentence as it comes; the slot is given back when the model
   has written, before the last sentences' speech is awaited);
5. record the turn (which ends its lease), start summarizing the conversation ahead in the
   background if it has grown long (SUMMARY_AHEAD_RATIO), and speak a whole reply;
6. release: leaving the blocks gives back the slot, and a failed turn's lease, its new
   session's place and summaries.

A turn is one of four kinds (`Steer`): a client's (it sends the conversation, `messages`),
or, on a conversation kept on the server, a new message, a regenerate (a new alternate for
the last reply) or a continue (the last reply extended). A server conversation's turn holds
it from admission to record: changes meanwhile answer 409.

No turn is stored before the reply succeeded, except a streamed reply its client stopped:
what was sent is recorded, marked interrupted (the history matches what the user saw); one
the model had written whole (its last sentences still spoken) is recorded whole.
(Summaries made on the way are cached at once: they hold for that conversation whatever
becomes of the reply.)
"""

import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import anyio
from redis.exceptions import RedisError
from starlette.types import Receive

from avatar_chat.context.planner import Context, Conversation
from avatar_chat.context.tokens import TokenEstimator, learn_calibration
from avatar_chat.conversations import messages as msgs
from avatar_chat.errors import ContextTooLong, ConversationFull, NothingToSteer
from avatar_chat.limits.admission import Lease
from avatar_chat.llm import LlmReply, LlmRequest
from avatar_chat.memory.learning import JobDraft, read_marks
from avatar_chat.memory.recall import LineCost, Visible, visible
from avatar_chat.memory.schemas import MemoryMode
from avatar_chat.prompt.alternation import alternating
from avatar_chat.prompt.builder import Limits, Prompt, Scene, build_prompt
from avatar_chat.schemas import (
    ChatReply,
    ChatRequest,
    GenerationOptions,
    MemoryUsed,
    PromptReceipt,
    PromptTokens,
    Scenario,
    Usage,
    check_limits,
)
from avatar_chat.service import ChatService, Setup
from avatar_chat.store import SessionState, TurnRecord, kept_on_server
from avatar_shared.errors import AppError
from avatar_shared.rate import Caller
from avatar_shared.streaming import primed, sse
from avatar_shared.timestamps import utc_now

log = logging.getLogger(__name__)

Kind = Literal["client", "message", "regenerate", "continue"]
RECORD_ON_STOP_S = 5.0  # the longest a stopped stream waits to record what it sent


@dataclass(frozen=True)
class Steer:
    """What a turn asks for: its kind, its options, and (a server conversation's) its id and
    the user's new message."""

    kind: Kind
    options: GenerationOptions
    session_id: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, body: ChatRequest) -> "Steer":
        if body.on_server:
            return cls("message", body, str(body.session_id), body.message)
        return cls("client", body, None if body.session_id is None else str(body.session_id))

    @property
    def on_server(self) -> bool:
        return self.kind != "client"


@dataclass(frozen=True)
class Plan:
    """What a turn sends to the model and how its reply changes the stored conversation."""

    turns: list[dict[str, str]]  # the conversation the prompt is built from
    setup: Setup
    last: tuple[str, msgs.Message] | None = None  # regenerate, continue: the reply acted on
    # Positions in `turns` of stored messages flagged `unlearned` (never read for memories):
    # kept apart, as `turns` go to the LLM as they are.
    unlearned: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Turn:
    """A planned turn: what the LLM gets, and what it came from."""

    steer: Steer
    plan: Plan
    session_id: str
    voice_id: str | None
    llm_request: LlmRequest
    context: Context  # how the conversation was fitted into the window
    receipt: PromptReceipt  # what the model saw, for the reply
    talk: Conversation  # the conversation as the planner took it
    max_swipes: int = 20  # MAX_SWIPES: a reply's alternates
    meta: dict[str, str] | None = None  # the session's hash as the turn found it
    learns: bool = True  # the conversation's memory is on (not read_only, not off)

    @property
    def flags(self) -> bool:
        """Whether what this turn says is stored flagged `unlearned`: its memory is read_only
        or off, on a conversation kept on the server (a client's record holds no flags)."""
        return not self.learns and self.steer.on_server

    def unread(self) -> frozenset[int]:
        """Positions, in the conversation with its reply (`replied`, `said`), of the messages
        memory never reads: the stored ones flagged, and what this turn flags (a reply
        regenerated or continued keeps its flag)."""
        size = len(self.plan.turns) + (self.steer.kind != "continue")
        new = set[int]()
        if self.plan.last is not None and self.plan.last[1].get("unlearned"):
            new.add(size - 1)
        if self.flags:
            new.add(size - 1)  # the reply
            if self.steer.kind == "message":
                new.add(size - 2)  # the user's new message
        return self.plan.unlearned | new

    def replied(self, reply: LlmReply) -> Conversation:
        """The conversation with its reply, as the next turn will bring it (a continued
        reply is longer, not one more: only aged turns are summarized, never the last). Its
        estimate is the one this reply's count teaches, as the next turn's is: the turn's own
        may be the default, whose overcount leaves a summary made ahead no room."""
        learned = learn_calibration(self.llm_request.messages, reply.prompt_tokens)
        talk = replace(self.talk, estimate=TokenEstimator(learned)) if learned else self.talk
        if self.steer.kind == "continue":
            return replace(talk, unlearned=self.unread())
        said = {"role": "assistant", "content": reply.content}
        return replace(talk, turns=[*talk.turns, said], unlearned=self.unread())

    def learning(self, record: TurnRecord) -> JobDraft | None:
        """What reading this conversation for memories needs, when it learns."""
        if self.talk.learning is None:
            return None
        stored = record.replaced[1] if record.replaced else record.exchanged[-1]
        return replace(self.talk.learning, last_message_id=str(stored["id"]))

    def said(self, reply: LlmReply, record: TurnRecord) -> list[dict[str, str]]:
        """The conversation as it now stands (a continued reply: its whole text)."""
        turns = self.replied(reply).turns
        if self.steer.kind == "continue" and record.replaced:
            turns = [*turns[:-1], {"role": "assistant", "content": record.replaced[1]["content"]}]
        return turns

    def record(self, reply: LlmReply, interrupted: bool = False) -> TurnRecord:
        """The finished turn, as the session stores it: the messages it adds (the user's new
        one, none when a client's conversation ended with the character's: it spoke again),
        or the reply it changes (a new alternate; a longer text). Memory read_only or off:
        each is flagged `unlearned`, never read for memories."""
        now, kind, text = utc_now(), self.steer.kind, reply.content
        exchanged: list[dict[str, object]] = []
        replaced = None
        if kind == "client":
            last = self.plan.turns[-1]
            if last["role"] == "user":
                exchanged.append(msgs.new_message("user", last["content"], now))
        elif kind == "message":
            exchanged.append(msgs.new_message("user", self.steer.message or "", now))
        if self.plan.last is not None:
            raw, message = self.plan.last
            if kind == "continue":
                message = msgs.extended(message, text, now, interrupted)
            else:
                message = msgs.with_alternate(message, text, now, interrupted, self.max_swipes)
            replaced = (raw, msgs.unlearned(message) if self.flags else message)
        elif text or not interrupted:  # a reply stopped before its first word is none
            exchanged.append(msgs.new_message("assistant", text, now, interrupted))
        if self.flags:
            exchanged = [msgs.unlearned(message) for message in exchanged]
        return TurnRecord(
            exchanged=exchanged,
            model=self.llm_request.model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            summary_covered=self.context.covered,
            calibration=learn_calibration(self.llm_request.messages, reply.prompt_tokens),
            replaced=replaced,
            character_id=self.plan.setup.character_id,
            on_server=self.steer.on_server,
            found=bool(self.meta),
        )

    def answer(
        self,
        reply: LlmReply,
        record: TurnRecord,
        audio_url: str | None,
        tts_error: str | None,
    ) -> ChatReply:
        stored = record.replaced[1] if record.replaced else record.exchanged[-1]
        users = [m for m in record.exchanged if m["role"] == "user"]
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
            message_id=str(stored["id"]),
            user_message_id=str(users[-1]["id"]) if users else None,
            swipe_id=int(stored.get("swipe_id", 0)),
        )


async def reply_turn(chat: ChatService, steer: Steer, caller: Caller) -> ChatReply:
    session_id, is_new = await _checked(chat, steer)
    async with (
        chat.admission.turn(session_id, caller, hold=steer.on_server) as lease,
        _undone_on_failure(chat, session_id),
    ):
        plan = partial(_planned, chat, steer, session_id, is_new, caller)
        turn = await plan()
        try:
            async with chat.gate.slot(caller.key):
                reply = await chat.llm.complete(turn.llm_request)
        except ContextTooLong as refused:  # the estimate undercounted: once more, by its count
            turn = await plan(_recounted(turn, refused))
            async with chat.gate.slot(caller.key):
                reply = await chat.llm.complete(turn.llm_request)
        record = turn.record(reply)
        await chat.record(session_id, caller.identity, record, lease)
        chat.context.summarize_ahead(turn.replied(reply))
        _learn(chat, turn, reply, record)
        speech = await chat.voice.speak(
            steer.options, turn.voice_id, reply.content, caller.identity
        )
    return turn.answer(reply, record, *speech)


async def stream_turn(
    chat: ChatService, steer: Steer, caller: Caller, receive: Receive | None = None
) -> AsyncGenerator[bytes, None]:
    """The SSE events of a streamed turn, once its first one is ready: a request that fails
    up front (bad input, LLM down, unknown model) gets an ordinary error response; a failure
    after that ends the stream with an `error` event. However the stream ends (a client's
    disconnect included, while the first event is awaited too: `receive` is watched), the
    upstream request is closed and what the turn held released; a client that stopped it
    has what it was sent recorded, marked interrupted."""
    events = _stream_events(chat, steer, caller)
    return _error_event_on_failure(await primed(events, receive))


async def _stream_events(
    chat: ChatService, steer: Steer, caller: Caller
) -> AsyncGenerator[bytes, None]:
    session_id, is_new = await _checked(chat, steer)
    options = steer.options
    async with (
        chat.admission.turn(session_id, caller, hold=steer.on_server) as lease,
        _undone_on_failure(chat, session_id),
    ):
        plan = partial(_planned, chat, steer, session_id, is_new, caller)
        turn = await plan()
        sent: list[str] = []  # the deltas the client was given
        reply: LlmReply | None = None  # the model has written it all
        try:
            async with chat.voice.speaker(options, turn.voice_id, caller.identity) as speaker:
                async with _streaming(chat, caller, turn, plan) as (turn, upstream):
                    async for item in upstream:
                        if isinstance(item, LlmReply):  # the last item: the whole reply
                            reply = item
                            break
                        yield sse("delta", {"content": item})
                        sent.append(item)
                        for event in speaker.said(item):
                            yield sse("audio", event)
                # The model has written: its slot (and the upstream) goes while the speech
                # of the last sentences is awaited.
                async for event in speaker.rest():
                    yield sse("audio", event)
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            # Stopped while the last sentences were spoken: the reply was written whole (and
            # sent), so it is kept whole, with its counts. Stopped before any text: the
            # user's new message is still theirs to keep. Once recorded, the session keeps
            # its place and its summaries (they see it exists).
            if reply is not None:
                await _record_stopped(chat, turn, reply, caller, lease, interrupted=False)
            elif sent or steer.kind == "message":
                await _record_stopped(chat, turn, LlmReply("".join(sent), 0, 0), caller, lease)
            raise
        assert reply is not None  # the upstream's last item
        record = turn.record(reply)
        # A client that leaves now (Starlette cancels the stream) must not cancel the save:
        # the reply would be lost whole and the conversation held until the lease ran out.
        with anyio.CancelScope(shield=True):
            await chat.record(session_id, caller.identity, record, lease)
        chat.context.summarize_ahead(turn.replied(reply))
        _learn(chat, turn, reply, record)
        speech: tuple[str | None, str | None] = (None, None)
        if not speaker.speaks:  # delayed speech: the URL its audio will have
            speech = await chat.voice.speak(options, turn.voice_id, reply.content, caller.identity)
    done = turn.answer(reply, record, *speech)
    if speaker.speaks:
        done.audio_urls = speaker.urls
        done.tts_error = speaker.failure  # no sentence could be spoken
    yield sse("done", done.model_dump())


@asynccontextmanager
async def _streaming(
    chat: ChatService, caller: Caller, turn: Turn, plan: Callable[[float], Awaitable[Turn]]
) -> AsyncIterator[tuple[Turn, AsyncIterator[str | LlmReply]]]:
    """The turn's upstream items, in the caller's gate slot, and the turn they answer. The
    server refuses a prompt too long before the first item (a 400: nothing is sent yet), so
    the turn is then planned again once by its count, outside the slot, as `reply_turn`
    does, and streamed: the client gets an ordinary stream."""
    async with AsyncExitStack() as held:
        try:
            items = await _opened(held, chat, caller, turn)
        except ContextTooLong as refused:
            await held.aclose()  # the slot, while the turn is planned again
            turn = await plan(_recounted(turn, refused))
            items = await _opened(held, chat, caller, turn)
        yield turn, items


async def _opened(
    held: AsyncExitStack, chat: ChatService, caller: Caller, turn: Turn
) -> AsyncIterator[str | LlmReply]:
    """The turn's upstream items, its first one read (a refusal comes before it), held open
    with the caller's gate slot by `held`."""
    await held.enter_async_context(chat.gate.slot(caller.key))
    upstream = await held.enter_async_context(aclosing(chat.llm.stream(turn.llm_request)))
    first = await anext(upstream)
    return await held.enter_async_context(aclosing(_following(first, upstream)))


async def _following(
    first: str | LlmReply, rest: AsyncIterator[str | LlmReply]
) -> AsyncGenerator[str | LlmReply, None]:
    yield first
    async for item in rest:
        yield item


def _recounted(turn: Turn, refused: ContextTooLong) -> float:
    """The calibration the model server's count of a prompt it refused teaches: with it, the
    turn is planned again (summarized, trimmed) to fit. The refusal stands when the server
    gave no count, one the estimate already matched (planned again, the prompt would not
    change), or one that fits the window as planned with max_tokens: the server's window is
    smaller than that (an operator's setting larger than the server's), and a turn planned
    again would fit the planned one, to be refused again."""
    counted, request = refused.prompt_tokens, turn.llm_request
    if not counted or counted + request.max_tokens <= request.context_tokens:
        raise refused
    learned = learn_calibration(request.messages, counted)
    if not learned or learned <= turn.talk.estimate.calibration:
        raise refused
    return learned


def _learn(chat: ChatService, turn: Turn, reply: LlmReply, record: TurnRecord) -> None:
    """Reads the conversation for memories in the background when due (its failure is not
    the turn's: the reply is recorded, and a later turn tries again)."""
    draft = turn.learning(record)
    if draft is not None:
        chat.learner.after_turn(draft, turn.said(reply, record), turn.meta or {}, turn.unread())
    elif turn.plan.setup.character_id:  # read_only, off: what it says is never learned
        chat.learner.mark_read(turn.session_id, turn.said(reply, record))


async def _record_stopped(
    chat: ChatService,
    turn: Turn,
    reply: LlmReply,
    caller: Caller,
    lease: Lease,
    interrupted: bool = True,
) -> None:
    """Records what a stopped stream sent, marked `interrupted` unless the model had written
    it all: shielded from the cancellation that stopped it, within RECORD_ON_STOP_S (a
    failure is not the client's: it has gone). Memory treats it as any recorded turn:
    read_only or off, it is marked read (a client's conversation has no flags: else the next
    reading would learn it)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(RECORD_ON_STOP_S):
        try:
            record = turn.record(reply, interrupted)
            await chat.record(turn.session_id, caller.identity, record, lease)
            if not interrupted:
                chat.context.summarize_ahead(turn.replied(reply))
            _learn(chat, turn, reply, record)
        except (AppError, RedisError):  # not recorded: the conversation is not held either
            with suppress(RedisError):
                await chat.admission.let_go(lease)


async def _checked(chat: ChatService, steer: Steer) -> tuple[str, bool]:
    """The session id of a well-formed turn for an offered model, and whether it is new. (A
    cached model list: a model the server lacks costs the caller neither rate nor session.)"""
    if isinstance(steer.options, ChatRequest):
        check_limits(steer.options, chat.settings)
    await chat.catalog.require(steer.options.model or chat.settings.default_model)
    if steer.session_id is None:
        return str(uuid.uuid4()), True
    return steer.session_id, False


async def _plan(chat: ChatService, steer: Steer, state: SessionState, caller: Caller) -> Plan:
    """The conversation a turn is planned from: the client's, or the stored one as the kind
    of turn takes it."""
    if steer.kind == "client":
        if state.is_conversation:
            raise kept_on_server()
        body = steer.options
        assert isinstance(body, ChatRequest) and body.messages is not None
        turns = [{"role": m.role, "content": m.content} for m in body.messages]
        setup = Setup(body.persona, body.character_id, body.scenario, body.user_persona_id)
        return Plan(turns, setup)
    stored, setup = state.messages, Setup.stored(state.meta)
    if steer.kind == "message":
        _check_room(chat, state, caller, adds=2, more=steer.message or "")
        said = {"role": "user", "content": steer.message or ""}
        return Plan([*msgs.turns(stored), said], setup, unlearned=msgs.flagged(stored))
    last = stored[-1] if stored else None
    if steer.kind == "regenerate" and last is not None and last["role"] == "user":
        _check_room(chat, state, caller, adds=1)
        # The reply it never got.
        return Plan(msgs.turns(stored), setup, unlearned=msgs.flagged(stored))
    _check_room(chat, state, caller, adds=0)
    if last is None or last["role"] != "assistant":
        raise NothingToSteer("The conversation does not end with a reply to act on.")
    if steer.kind == "continue":
        return Plan(msgs.turns(stored), setup, (state.raw[-1], last), msgs.flagged(stored))
    if len(stored) == 1:  # the opening greeting alone
        raise NothingToSteer(
            "The greeting's alternates are the character's greetings: choose one with "
            "PUT /api/chat/sessions/{session_id}/messages/{message_id}/swipe."
        )
    earlier = stored[:-1]
    return Plan(msgs.turns(earlier), setup, (state.raw[-1], last), msgs.flagged(earlier))


def _check_room(
    chat: ChatService, state: SessionState, caller: Caller, adds: int, more: str = ""
) -> None:
    """A conversation kept on the server is never trimmed: one that is full (or whose
    owner's kept conversations hold their quota) takes no more turns, before the LLM is
    asked: a reply that could not be kept is never generated. `adds`: messages the turn adds,
    `more`: the user's new text."""
    settings, signed_in = chat.settings, caller.identity.signed_in
    max_bytes = settings.max_stored_bytes if signed_in else settings.anon_max_stored_bytes
    stored = int(state.meta.get("stored_bytes", 0)) + len(more.encode())
    if state.meta.get("kept") == "1" and (
        state.kept_bytes + len(more.encode()) >= settings.max_conversation_bytes_per_user
    ):
        raise chat.sessions.kept_bytes_spent()
    if len(state.raw) + adds > settings.max_stored_messages or stored >= max_bytes:
        raise ConversationFull(
            f"This conversation holds as much as it may ({settings.max_stored_messages} "
            f"messages, {max_bytes} bytes): branch from a recent message, delete some, or "
            "start a new one."
        )


async def _planned(
    chat: ChatService,
    steer: Steer,
    session_id: str,
    is_new: bool,
    caller: Caller,
    calibration: float | None = None,
) -> Turn:
    """The character and the session loaded, the prompt built from them, and the
    conversation fitted into the window around it (`calibration`: the estimate's, instead
    of the session's)."""
    settings, options = chat.settings, steer.options
    model = options.model or settings.default_model
    # A new id has no owner yet; anyone else's session is reported as missing.
    state = (
        SessionState()
        if is_new
        else await chat.sessions.load(session_id, caller.user_id, with_messages=steer.on_server)
    )
    plan = await _plan(chat, steer, state, caller)
    card, voice_id = await chat.character(plan.setup)
    window = await chat.windows.tokens(model)
    turns = plan.turns
    estimate = TokenEstimator(calibration or state.calibration(model))
    # Room for the system message's parts: the turns count as they will once summarized
    # (else a long conversation would leave its examples out for good).
    summarized = estimate.messages(turns[-settings.keep_recent_turns :])
    history = min(estimate.messages(turns), summarized + settings.summary_max_tokens)
    limits = Limits(
        room=int(window * settings.summary_trigger_ratio) - options.max_tokens - history,
        lore_budget=int(window * settings.lore_budget_ratio),
        scan_depth=settings.lore_scan_depth,
        memory_budget=int(window * settings.memory_budget_ratio),
        memory_query=settings.memory_query_messages,
        lore_seed=options.sampling(card.generation).seed,  # with a seed, a turn replays its lore
    )
    user = await chat.user_persona(plan.setup, caller.identity, stored=steer.kind != "client")
    mode = _memory_mode(steer, state)
    memories = await _memories(chat, plan, mode, state, session_id, caller)
    scene, memory_cost = _scene(plan.setup.scenario), LineCost(estimate.calibration)
    prompt = build_prompt(card, user, scene, turns, limits, estimate.text, memories, memory_cost)
    talk = Conversation(
        session_id=session_id,
        system=prompt.system,
        turns=turns,
        model=model,
        max_tokens=options.max_tokens,
        window=window,
        estimate=estimate,
        reserved=prompt.reserved,
        caller=caller.key,
        address=caller.address_key,
        covered_before=int(state.meta.get("summary_covered", 0)),
        learning=_draft(plan, mode, state.meta, session_id, caller, model, window, steer),
        unlearned=plan.unlearned,
        existed=bool(state.meta),
    )
    context = await chat.context.fit(talk, state.summaries)
    messages = prompt.finish(context.messages)
    continues = steer.kind == "continue"
    if continues:  # the reply being continued ends the prompt, after what follows it
        at = max(i for i, message in enumerate(messages) if message is context.messages[-1])
        messages.append(messages.pop(at))
    if settings.llm_alternate_roles:
        messages = alternating(messages)
    sampling = options.sampling(card.generation)
    # The model must not write the user's lines: it stops where one would begin.
    stop = dict.fromkeys((f"\n{prompt.macros.user}:", *sampling.stop))  # in order, once each
    sampling = replace(sampling, stop=tuple(stop))
    temperature = options.temperature_with(card.generation)
    request = LlmRequest(
        model, messages, temperature, options.max_tokens, window, sampling, continues
    )
    receipt = _receipt(prompt, context, estimate, options.max_tokens)
    return Turn(
        steer,
        plan,
        session_id,
        voice_id,
        request,
        context,
        receipt,
        talk,
        settings.max_swipes,
        state.meta,
        learns=mode == "on",
    )


def _draft(
    plan: Plan,
    mode: MemoryMode,
    meta: dict[str, str],
    session_id: str,
    caller: Caller,
    model: str,
    window: int,
    steer: Steer,
) -> JobDraft | None:
    """What reading the conversation for memories will need, when its memory learns."""
    character_id = plan.setup.character_id
    if mode != "on" or not character_id:
        return None
    root, marks = meta.get("root") or session_id, tuple(read_marks(meta))
    key, address = caller.key, caller.address_key
    paused_at = int(meta.get("memory_paused_at") or 0)
    floor = 0 if steer.on_server else paused_at  # a server's messages carry their flags
    return JobDraft(
        session_id,
        caller.user_id,
        address,
        key,
        character_id,
        root,
        None,
        model,
        window,
        marks,
        paused_at,
        floor,
    )


def _memory_mode(steer: Steer, state: SessionState) -> MemoryMode:
    """The conversation's own mode (PATCH sets it); a client's turn may say it (default:
    on)."""
    mode = state.meta.get("memory") or "on"
    if not steer.on_server:
        assert isinstance(steer.options, ChatRequest)
        mode = steer.options.memory or mode
    return "read_only" if mode == "read_only" else "off" if mode == "off" else "on"


async def _memories(
    chat: ChatService,
    plan: Plan,
    mode: MemoryMode,
    state: SessionState,
    session_id: str,
    caller: Caller,
) -> Visible | None:
    """The memories this conversation may use: its character's, of its user (none when its
    memory is off or it has no character)."""
    character_id = plan.setup.character_id
    if mode == "off" or not character_id:
        return None
    recalled = await chat.memories.recall(caller.user_id, character_id)
    if not recalled.memories:
        return None
    return visible(recalled, state.meta.get("root") or session_id, plan.turns)


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
        memories=[MemoryUsed(id=m.id, text=m.text, pinned=m.pinned) for m in prompt.memories],
    )


@asynccontextmanager
async def _undone_on_failure(chat: ChatService, session_id: str) -> AsyncIterator[None]:
    """A turn that fails leaves no summary of a session that does not exist: a new one, one
    whose client chose its id, or one deleted during the turn. (A stopped stream that was
    recorded made its session exist: its summaries stay.)"""
    try:
        yield
    except BaseException:
        # Shielded: a stream's cancellation (its client left) fires at every await after it.
        with anyio.CancelScope(shield=True), suppress(RedisError):  # else they expire
            await chat.summaries.forget_orphan(session_id)
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
