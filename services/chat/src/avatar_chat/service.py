"""The chat domain: a conversation turn, its session, and the model list.

A turn of `POST /api/chat` goes through these phases, each one call from `ChatService`:
1. check the request's sizes and its model (offered ones only, from a cached list), then
   admit it (the caller's rate, the concurrent-session limit and the caller's share of it:
   one atomic step; a new session's place is provisional until its first turn succeeds).
   Nothing else is spent on a request that is refused;
2. plan: the persona (characters service), the session and the window;
3. fit the conversation into the window, summarizing older turns if due;
4. ask the LLM, in one of this replica's in-flight slots;
5. record the turn, then voice the reply.
No turn is stored before the reply succeeded. (Summaries made on the way are cached at once:
they hold for that conversation whatever becomes of the reply.)
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, suppress
from dataclasses import replace

import aiohttp
import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_chat.context.persona import build_system_prompt
from avatar_chat.context.planner import Context, ContextPlanner, with_summary
from avatar_chat.context.summaries import SummaryStore
from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.errors import LlmBusy
from avatar_chat.limits.admission import Admission
from avatar_chat.llm import LlmReply, LlmRequest, make_llm_client
from avatar_chat.llm.model_catalog import ModelCatalog
from avatar_chat.llm.windows import ContextWindows
from avatar_chat.metrics import LLM_TOKENS
from avatar_chat.peers.characters import CharacterDirectory
from avatar_chat.peers.tts import TtsClient
from avatar_chat.schemas import ChatReply, ChatRequest, ModelInfo, SessionHistory, Usage
from avatar_chat.settings import ChatSettings
from avatar_chat.speech.voicing import ReplyVoice
from avatar_chat.store import SessionState, SessionStore
from avatar_chat.turn import Turn, check_limits, check_room, sse
from avatar_shared.errors import AppError, ValidationFailed
from avatar_shared.gate import Gate
from avatar_shared.identity import Identity
from avatar_shared.rate import Caller


class ChatService:
    def __init__(
        self,
        settings: ChatSettings,
        redis: Redis,
        http: httpx.AsyncClient,
        llm_http: aiohttp.ClientSession,
    ) -> None:
        """`http` reaches the peer services, `llm_http` the LLM server (its own timeouts)."""
        self.settings = settings
        self.llm = llm = make_llm_client(settings, llm_http)
        self.sessions = SessionStore(redis, settings.session_ttl_s, settings.max_stored_messages)
        self.characters = CharacterDirectory(
            http, settings.characters_url, settings.character_cache_s
        )
        self.voice = ReplyVoice(TtsClient(http, settings.tts_url, settings.tts_timeout_s))
        self.admission = Admission(
            redis,
            settings.max_concurrent_users,
            settings.active_session_idle_s,
            settings.max_sessions_per_user,
            settings.chat_rate_per_min,
        )
        self.gate = Gate(settings.llm_max_in_flight, settings.llm_queue_wait_s, LlmBusy)
        self.windows = ContextWindows(llm, settings.llm_context_tokens, settings.models_cache_s)
        self.summaries = SummaryStore(redis, settings.session_ttl_s, settings.summary_timeout_s + 5)
        self.context = ContextPlanner(llm, self.gate, self.summaries, settings)
        self.catalog = ModelCatalog(
            llm, settings.default_model, settings.offered_models, settings.models_cache_s
        )

    async def reply(self, body: ChatRequest, caller: Caller) -> ChatReply:
        async with self._admitted(body, caller) as turn:
            async with self.gate.slot():
                reply = await self.llm.complete(turn.llm_request)
            return await self._finish(turn, reply, caller.identity, speak=True)

    async def stream(self, body: ChatRequest, caller: Caller) -> AsyncIterator[bytes]:
        """Starts the LLM stream and waits for its first item before returning, so a request
        that fails up front (bad input, LLM down, unknown model) gets an ordinary error
        response. What the stream holds passes to the events, which release it when done."""
        async with AsyncExitStack() as held:
            turn = await held.enter_async_context(self._admitted(body, caller))
            await held.enter_async_context(self.gate.slot())
            upstream = await held.enter_async_context(aclosing(self.llm.stream(turn.llm_request)))
            first = await anext(upstream)
            return self._events(turn, first, upstream, caller.identity, held.pop_all())

    async def models(self) -> list[ModelInfo]:
        return await self.catalog.models()

    async def history(
        self, session_id: str, user_id: str, limit: int, before: int | None
    ) -> SessionHistory:
        page = await self.sessions.history(session_id, user_id, limit, before)
        return SessionHistory.model_validate(page)

    async def delete_session(self, session_id: str, caller: Caller) -> None:
        await self.sessions.delete(session_id, caller.user_id)
        await self.admission.release(session_id, caller.key)  # its place goes to the next user

    # --- the phases of a turn -----------------------------------------------------------

    async def _plan(
        self, body: ChatRequest, session_id: str, caller: Caller
    ) -> tuple[Turn, SessionState]:
        model = body.model or self.settings.default_model
        persona, voice_id = await self._persona(body)
        is_new = body.session_id is None
        # A new id has no owner yet; anyone else's session is reported as missing.
        state = SessionState() if is_new else await self.sessions.load(session_id, caller.user_id)
        system = build_system_prompt(persona, body.scenario)
        turns = [{"role": m.role, "content": m.content} for m in body.messages]
        request = LlmRequest(
            model=model,
            messages=[with_summary(system, None), *turns],
            temperature=body.temperature,
            max_tokens=body.max_tokens,
            context_tokens=await self.windows.tokens(model),
        )
        check_room(request, TokenEstimator(state.calibration(model)))
        turn = Turn(body, session_id, is_new, voice_id, request, Context.as_sent(request.messages))
        return turn, state

    async def _persona(self, body: ChatRequest) -> tuple[str, str | None]:
        """The persona to play and the voice to speak it with."""
        persona, voice_id = body.persona, None
        if body.character_id:
            character = await self.characters.get(body.character_id)
            persona, voice_id = persona or character.persona, character.voice_id
        if not persona:
            raise ValidationFailed(f"character_id: character '{body.character_id}' has no persona")
        return persona, voice_id

    @asynccontextmanager
    async def _admitted(self, body: ChatRequest, caller: Caller) -> AsyncIterator[Turn]:
        """An admitted, planned turn whose conversation fits the window. If the block fails,
        a new session leaves nothing behind: neither its place in the limit nor a summary."""
        check_limits(body, self.settings)  # only well-formed requests count
        # A cached list: a model the server lacks costs the caller neither rate nor session.
        await self.catalog.require(body.model or self.settings.default_model)
        is_new = body.session_id is None
        session_id = str(uuid.uuid4()) if is_new else str(body.session_id)
        async with self.admission.provisional(session_id, caller.key):
            try:
                turn, state = await self._plan(body, session_id, caller)
                system, *turns = turn.llm_request.messages
                context = await self.context.fit(
                    turn.session_id, state, system["content"], turns, turn.llm_request
                )
                yield replace(
                    turn,
                    context=context,
                    llm_request=replace(turn.llm_request, messages=context.messages),
                )
            except BaseException:
                if is_new:
                    with suppress(RedisError):  # else they expire by themselves
                        await self.summaries.forget(session_id)
                raise

    async def _finish(
        self, turn: Turn, reply: LlmReply, caller: Identity, speak: bool
    ) -> ChatReply:
        await self.sessions.record_turn(turn.session_id, caller.user_id, turn.record(reply))
        model = turn.llm_request.model
        LLM_TOKENS.labels(model, "prompt").inc(max(0, reply.prompt_tokens))
        LLM_TOKENS.labels(model, "completion").inc(max(0, reply.completion_tokens))
        audio_url, tts_error = None, None
        if speak:
            audio_url, tts_error = await self.voice.speak(
                turn.body, turn.voice_id, reply.content, caller
            )
        return ChatReply(
            content=reply.content,
            usage=Usage(
                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens
            ),
            session_id=turn.session_id,
            audio_url=audio_url,
            context_summarized=turn.context.summarized,
            context_truncated=turn.context.truncated,
            tts_error=tts_error,
        )

    # --- a streamed turn ----------------------------------------------------------------

    async def _events(
        self,
        turn: Turn,
        first: str | LlmReply,
        upstream: AsyncIterator[str | LlmReply],
        caller: Identity,
        held: AsyncExitStack,
    ) -> AsyncIterator[bytes]:
        """The SSE events of a started stream. A failure after the first delta ends it with
        an `error` event; on any end, a client's disconnect included, `held` closes the
        upstream request, frees the LLM slot and (unless the turn was recorded) gives a new
        session's place back."""
        try:
            async with held:
                events = self._turn_events(turn, first, upstream, caller)
                async with aclosing(events):
                    async for event in events:
                        yield event
        except AppError as exc:
            yield sse("error", {"code": exc.code, "message": exc.message})
        except RedisError:
            yield sse("error", {"code": "redis_unavailable", "message": "The reply was not saved."})

    async def _turn_events(
        self,
        turn: Turn,
        item: str | LlmReply,
        upstream: AsyncIterator[str | LlmReply],
        caller: Identity,
    ) -> AsyncIterator[bytes]:
        speaker = self.voice.speaker(turn.body, turn.voice_id, caller)
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
            reply = await self._finish(turn, item, caller, speak=speaker is None)
            if speaker:
                reply.audio_urls = speaker.urls
            yield sse("done", reply.model_dump())
        finally:
            if speaker:
                speaker.cancel()
