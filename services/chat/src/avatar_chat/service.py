"""The chat domain's parts, and its reads and writes: sessions, characters and models. A
turn itself, which uses these parts in order, is `flows`."""

from contextlib import suppress
from dataclasses import dataclass, replace

import aiohttp
import anyio
import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_chat.context.planner import ContextPlanner
from avatar_chat.context.summaries import SummaryStore
from avatar_chat.errors import LlmBusy
from avatar_chat.limits.admission import RATE_WINDOW_S, Admission, Lease, Limits
from avatar_chat.llm import make_llm_client
from avatar_chat.llm.model_catalog import ModelCatalog
from avatar_chat.llm.windows import ContextWindows
from avatar_chat.memory.learning import MemoryLearner
from avatar_chat.memory.store import MemoryStore
from avatar_chat.metrics import LLM_TOKENS
from avatar_chat.peers.characters import CharacterDirectory
from avatar_chat.peers.tts import TtsClient
from avatar_chat.prompt.builder import CharacterCard, UserPersona
from avatar_chat.schemas import ModelInfo, Scenario, SessionHistory
from avatar_chat.settings import ChatSettings
from avatar_chat.speech.voicing import ReplyVoice
from avatar_chat.store import SessionStore, TurnRecord
from avatar_shared.budget import Budget
from avatar_shared.errors import ValidationFailed
from avatar_shared.gate import Gate
from avatar_shared.identity import Identity
from avatar_shared.peers import PeerRejected
from avatar_shared.rate import Caller, RateLimit


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
        conversations = Budget(redis, "conversations", settings.redis_maxmemory_bytes)
        self.sessions = SessionStore(
            redis,
            conversations,
            settings.session_ttl_s,
            settings.max_stored_messages,
            (settings.max_stored_bytes, settings.anon_max_stored_bytes),
            (settings.max_stored_sessions_per_user, settings.max_stored_sessions_per_address),
            (settings.max_conversations_per_user, settings.max_conversation_bytes_per_user),
        )
        self.characters = CharacterDirectory(
            http, settings.characters_url, settings.character_cache_s
        )
        self.voice = ReplyVoice(TtsClient(http, settings.tts_url, settings.tts_timeout_s))
        self.admission = Admission(redis, admission_limits(settings), conversations)
        self.gate = Gate(settings.llm_max_in_flight, settings.llm_queue_wait_s, LlmBusy)
        # Chat files are read one at a time: a file's parse holds its whole tree in memory
        # (tens of MB for a hostile 2 MiB one), and threads would only take turns at the GIL.
        self.import_parsing = anyio.CapacityLimiter(1)
        self.windows = ContextWindows(llm, settings.llm_context_tokens, settings.models_cache_s)
        self.summaries = SummaryStore(redis, settings.session_ttl_s, settings.summary_timeout_s + 5)
        # A summary call is LLM work its caller causes: it counts in their chat rate, as
        # starting a conversation does.
        self.chat_rate = RateLimit(
            redis, "chat", settings.chat_rate_per_min, RATE_WINDOW_S, "chat requests", "a minute"
        )
        self.memories = MemoryStore(redis, settings)
        self.learner = MemoryLearner(
            redis, llm, self.gate, self.memories, self.chat_rate, settings, self.admission
        )
        self.context = ContextPlanner(
            llm, self.gate, self.summaries, self.chat_rate, settings, self.learner, self.admission
        )
        self.memory_writes = RateLimit(
            redis,
            "memory-writes",
            settings.memory_writes_per_min,
            RATE_WINDOW_S,
            "memory writes",
            "a minute",
        )
        self.catalog = ModelCatalog(
            llm, settings.default_model, settings.offered_models, settings.models_cache_s
        )

    async def models(self) -> list[ModelInfo]:
        return await self.catalog.models()

    async def character(self, setup: "Setup") -> tuple[CharacterCard, str | None]:
        """The character to play and the voice to speak it with: the setup's `persona` is
        its description; a `character_id` adds everything else the character has."""
        card, voice_id = CharacterCard(description=setup.persona or ""), None
        if setup.character_id:
            profile = await self.characters.get(setup.character_id)
            card, voice_id = profile.card, profile.voice_id
            if setup.persona:
                card = replace(card, description=setup.persona)
        if not setup.character_id and not card.description:
            raise ValidationFailed("give a persona or a character_id")
        if not card.description:
            raise ValidationFailed(f"character_id: character '{setup.character_id}' has no persona")
        return card, voice_id

    async def user_persona(
        self, setup: "Setup", caller: Identity, stored: bool = False
    ) -> UserPersona:
        """Who the user plays: their persona named by `user_persona_id`, else a name alone.
        `stored`: the setup of a conversation kept on the server, whose persona may have been
        deleted since (or stayed an anonymous id's at a sign-in): then the name alone, so
        the conversation goes on, as its export names it. Named by a request: its 404."""
        if setup.user_persona_id is None:
            return UserPersona(self.settings.default_user_name)
        try:
            return await self.characters.user_persona(setup.user_persona_id, caller)
        except PeerRejected:  # its 404 (other refusals are PeerUnavailable)
            if not stored:
                raise
            return UserPersona(self.settings.default_user_name)

    async def bound_persona(self, setup: "Setup", caller: Identity) -> "Setup":
        """The setup a conversation kept on the server starts with: the persona it names, else
        the caller's default one (if any), bound to the conversation then, as SillyTavern
        binds a persona when a chat is created: choosing another default later does not
        change it. (A client's conversation names its persona with each turn: no lookup.)"""
        if setup.user_persona_id is not None:
            return setup
        default = await self.characters.default_persona_id(caller)
        return replace(setup, user_persona_id=default)

    async def record(
        self, session_id: str, caller: Identity, turn: TurnRecord, lease: Lease
    ) -> None:
        """Stores the turn, and ends its lease (the LLM work is done)."""
        await self.sessions.record_turn(session_id, caller, turn, lease)
        LLM_TOKENS.labels(turn.model, "prompt").inc(max(0, turn.prompt_tokens))
        LLM_TOKENS.labels(turn.model, "completion").inc(max(0, turn.completion_tokens))

    async def history(
        self, session_id: str, user_id: str, limit: int, before: int | None
    ) -> SessionHistory:
        page = await self.sessions.history(session_id, user_id, limit, before)
        return SessionHistory.model_validate(page)

    async def delete_session(self, session_id: str, caller: Caller) -> None:
        await self.sessions.delete(session_id, caller.user_id)
        await self.admission.release(session_id, caller)  # its place goes to the next user
        with suppress(RedisError):  # else its reading finds it gone, and learns nothing
            await self.learner.drop_job(session_id)

    async def release(self, session_id: str, caller: Caller) -> None:
        """Frees the session's active place; the conversation stays."""
        await self.sessions.owned(session_id, caller.user_id)
        await self.admission.release(session_id, caller)


@dataclass(frozen=True)
class Setup:
    """Who a conversation is played with: sent with each turn of a client's conversation,
    stored with a conversation kept on the server."""

    persona: str | None = None  # the character's description, over the character's own
    character_id: str | None = None
    scenario: Scenario | None = None
    user_persona_id: str | None = None

    @classmethod
    def stored(cls, meta: dict[str, str]) -> "Setup":
        scenario = meta.get("scenario")
        return cls(
            meta.get("persona") or None,
            meta.get("character_id") or None,
            Scenario.model_validate_json(scenario) if scenario else None,
            meta.get("user_persona_id") or None,
        )

    def fields(self) -> dict[str, str]:
        """As the session's hash keeps it (empty ones are not stored)."""
        return {
            "persona": self.persona or "",
            "character_id": self.character_id or "",
            "scenario": self.scenario.model_dump_json(exclude_none=True) if self.scenario else "",
            "user_persona_id": self.user_persona_id or "",
        }


def admission_limits(settings: ChatSettings) -> Limits:
    # A turn's lease lasts as long as a turn's steps can: summarizing, waiting for a slot,
    # the reply, its speech, a stalled client's last send. It is renewed while the turn
    # runs (a streamed reply's speech, sentence by sentence, can take longer): this is how
    # long it outlives a replica that dies.
    lease_s = (
        settings.summary_timeout_s
        + settings.llm_queue_wait_s
        + settings.llm_total_timeout_s
        + settings.tts_timeout_s
        + settings.stream_write_timeout_s
    )
    return Limits(
        sessions=settings.max_concurrent_users,
        idle_s=settings.active_session_idle_s,
        sessions_per_user=settings.max_sessions_per_user,
        sessions_per_address=settings.max_sessions_per_address,
        rate_per_min=settings.chat_rate_per_min,
        calls_per_user=settings.llm_calls_per_user,
        calls_per_address=settings.llm_calls_per_address,
        lease_s=lease_s,
    )
