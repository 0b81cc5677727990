"""One chat turn: check the request, fit the conversation into the context window, ask the
LLM, record the turn.

The same preparation serves the JSON and the streamed answer. Everything that can refuse a
request (validation, ownership, the rate and session limits) runs before the first LLM call,
and no turn is stored before the reply succeeded. (Summaries made on the way are cached at
once: they hold for that conversation whatever becomes of the reply.)
"""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from avatar_chat.admission import Admission
from avatar_chat.characters import CharacterDirectory
from avatar_chat.clients import LlmClient, LlmReply, LlmRequest
from avatar_chat.context import Context, ContextPlanner, with_summary
from avatar_chat.gate import LlmGate
from avatar_chat.persona import build_system_prompt
from avatar_chat.rate_limit import ChatRateLimit
from avatar_chat.schemas import ChatReply, ChatRequest, Usage
from avatar_chat.sessions import SessionState, SessionStore, TurnRecord
from avatar_chat.settings import ChatSettings
from avatar_chat.speech import SentenceSpeaker, SpeechClient, SpeechFailed
from avatar_chat.tokens import TokenEstimator, learn_calibration
from avatar_chat.windows import ContextWindows
from avatar_shared.errors import AppError, ValidationFailed


@dataclass(frozen=True)
class ChatDeps:
    settings: ChatSettings
    llm: LlmClient
    sessions: SessionStore
    characters: CharacterDirectory
    speech: SpeechClient
    admission: Admission
    gate: LlmGate
    rate_limit: ChatRateLimit
    windows: ContextWindows
    context: ContextPlanner


@dataclass(frozen=True)
class PreparedTurn:
    session_id: str
    llm_request: LlmRequest
    user_message: str
    voice_id: str | None
    body: ChatRequest
    context: Context


def check_limits(body: ChatRequest, settings: ChatSettings) -> None:
    if len(body.messages) > settings.max_messages:
        raise ValidationFailed(f"messages: at most {settings.max_messages} messages are allowed")
    for index, message in enumerate(body.messages):
        if len(message.content) > settings.max_message_chars:
            raise ValidationFailed(
                f"messages.{index}.content: at most {settings.max_message_chars} characters"
            )
    if sum(len(m.content) for m in body.messages) > settings.max_total_chars:
        raise ValidationFailed(
            f"messages: at most {settings.max_total_chars} characters in all are allowed"
        )


async def prepare(body: ChatRequest, user_id: str, rate_key: str, deps: ChatDeps) -> PreparedTurn:
    check_limits(body, deps.settings)
    persona, voice_id = await _persona(body, deps)
    session_id, state = await _session(body, user_id, deps)
    model = body.model or deps.settings.default_model
    system = build_system_prompt(persona, body.scenario)
    turns = [{"role": m.role, "content": m.content} for m in body.messages]
    request = LlmRequest(
        model=model,
        messages=[with_summary(system, None), *turns],
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        context_tokens=await deps.windows.tokens(model),
    )
    check_room(request, TokenEstimator(state.calibration(model)))
    await deps.rate_limit.check(rate_key)  # only well-formed requests count
    await deps.admission.admit(session_id)
    try:
        context = await deps.context.fit(session_id, state, system, turns, request)
    except BaseException:
        await _release_if_new(session_id, body, deps)
        raise
    request = replace(request, messages=context.messages)
    return PreparedTurn(session_id, request, turns[-1]["content"], voice_id, body, context)


async def _persona(body: ChatRequest, deps: ChatDeps) -> tuple[str, str | None]:
    """The persona to play and the voice to speak it with."""
    persona, voice_id = body.persona, None
    if body.character_id:
        character = await deps.characters.get(body.character_id)
        persona, voice_id = persona or character.persona, character.voice_id
    if not persona:
        raise ValidationFailed("persona: give a persona or a character_id")
    return persona, voice_id


async def _session(body: ChatRequest, user_id: str, deps: ChatDeps) -> tuple[str, SessionState]:
    if body.session_id is None:
        return str(uuid.uuid4()), SessionState()  # new: nobody can own it yet
    session_id = str(body.session_id)
    return session_id, await deps.sessions.load(session_id, user_id)


def check_room(request: LlmRequest, estimate: TokenEstimator) -> None:
    """The system message, the new message and the reply must fit the window at all: no
    summary can make room for them."""
    needed = estimate.messages([request.messages[0], request.messages[-1]]) + request.max_tokens
    if needed > request.context_tokens:
        raise ValidationFailed(
            f"max_tokens: the persona, the last message and max_tokens ({request.max_tokens}) "
            f"need about {needed} tokens, more than the model's context window of "
            f"{request.context_tokens}"
        )


async def finish(
    turn: PreparedTurn, reply: LlmReply, user_id: str, deps: ChatDeps, speak: bool = True
) -> ChatReply:
    record = TurnRecord(
        exchanged=[
            {"role": "user", "content": turn.user_message},
            {"role": "assistant", "content": reply.content},
        ],
        model=turn.llm_request.model,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        summary_covered=turn.context.covered,
        calibration=learn_calibration(turn.llm_request.messages, reply.prompt_tokens),
    )
    await deps.sessions.record_turn(turn.session_id, user_id, record)
    audio_url, tts_error = None, None
    if speak:
        audio_url, tts_error = await voice_reply(turn, reply.content, user_id, deps.speech)
    return ChatReply(
        content=reply.content,
        usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens),
        session_id=turn.session_id,
        audio_url=audio_url,
        context_summarized=turn.context.summarized,
        context_truncated=turn.context.truncated,
        tts_error=tts_error,
    )


async def voice_reply(
    turn: PreparedTurn, text: str, user_id: str, speech: SpeechClient
) -> tuple[str | None, str | None]:
    """(audio_url, tts_error) for the reply, as its tts_mode asks."""
    body = turn.body
    if not body.tts_enabled or body.tts_mode == "on_click":
        return None, None  # on_click: the client calls /api/tts itself
    if body.tts_mode == "delayed":
        url = speech.speak_later(
            text, turn.voice_id, body.tts_streaming_mode, user_id, body.tts_delay_ms
        )
        return url, None
    try:
        return await speech.speak(text, turn.voice_id, body.tts_streaming_mode), None
    except SpeechFailed as exc:
        return None, str(exc)


async def reply_once(body: ChatRequest, user_id: str, rate_key: str, deps: ChatDeps) -> ChatReply:
    turn = await prepare(body, user_id, rate_key, deps)
    try:
        await deps.gate.enter()
        try:
            reply = await deps.llm.complete(turn.llm_request)
        finally:
            deps.gate.leave()
        return await finish(turn, reply, user_id, deps)
    except BaseException:
        await _release_if_new(turn.session_id, body, deps)
        raise


async def _release_if_new(session_id: str, body: ChatRequest, deps: ChatDeps) -> None:
    """A new session whose first turn failed does not exist: its place in the limit goes
    back at once, so an LLM outage cannot fill the limit with phantom sessions, and any
    summary it made goes too."""
    if body.session_id is None:
        try:
            await deps.admission.release(session_id)
            await deps.context.store.forget(session_id)
        except RedisError:
            pass  # both expire by themselves


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def open_stream(
    body: ChatRequest, user_id: str, rate_key: str, deps: ChatDeps
) -> AsyncIterator[bytes]:
    """Starts the LLM stream and waits for its first item before returning, so a request that
    fails up front (bad input, LLM down, unknown model) gets an ordinary error response."""
    turn = await prepare(body, user_id, rate_key, deps)
    try:
        await deps.gate.enter()
    except BaseException:
        await _release_if_new(turn.session_id, body, deps)
        raise
    upstream = deps.llm.stream(turn.llm_request)
    try:
        first = await anext(upstream)
    except BaseException:
        deps.gate.leave()
        await _release_if_new(turn.session_id, body, deps)
        raise
    return _events(turn, first, upstream, user_id, deps)  # it leaves the gate when done


async def _events(
    turn: PreparedTurn,
    first: str | LlmReply,
    upstream: AsyncIterator[str | LlmReply],
    user_id: str,
    deps: ChatDeps,
) -> AsyncIterator[bytes]:
    body = turn.body
    speaker = None
    if body.tts_enabled and body.tts_mode == "realtime":  # speech follows the text, per sentence
        speaker = SentenceSpeaker(deps.speech, turn.voice_id, body.tts_streaming_mode)
    item, completed = first, False
    try:
        while isinstance(item, str):
            yield sse("delta", {"content": item})
            if speaker:
                speaker.feed(item)
                for event in speaker.ready():
                    yield sse("audio", event)
            item = await anext(upstream)
        if speaker:
            speaker.finish()
            async for event in speaker.rest():
                yield sse("audio", event)
        reply = await finish(turn, item, user_id, deps, speak=speaker is None)
        if speaker:
            reply.audio_urls = speaker.urls
        yield sse("done", reply.model_dump())
        completed = True
    except AppError as exc:
        yield sse("error", {"code": exc.code, "message": exc.message})
    except RedisError:
        yield sse("error", {"code": "redis_unavailable", "message": "The reply was not saved."})
    finally:
        if speaker:
            speaker.cancel()
        await upstream.aclose()  # on disconnect too: closes the upstream request
        deps.gate.leave()
        if not completed:
            await _release_if_new(turn.session_id, body, deps)
