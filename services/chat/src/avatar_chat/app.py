from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from avatar_chat.context.planner import ContextPlanner
from avatar_chat.context.summaries import SummaryStore
from avatar_chat.limits.admission import Admission
from avatar_chat.limits.gate import LlmGate
from avatar_chat.limits.rate import ChatRateLimit
from avatar_chat.llm import make_llm_client, open_llm_http
from avatar_chat.llm.health import llm_check
from avatar_chat.llm.model_catalog import ModelCatalog
from avatar_chat.llm.windows import ContextWindows
from avatar_chat.peers.characters import CharacterDirectory
from avatar_chat.peers.tts import TtsClient
from avatar_chat.routes import router
from avatar_chat.service import ChatService
from avatar_chat.settings import ChatSettings
from avatar_chat.speech.voicing import ReplyVoice
from avatar_chat.store import SessionStore
from avatar_shared.app import BaseState, create_service_app


class ChatState(TypedDict):
    chat: ChatService


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()

    @asynccontextmanager
    async def chat_state(base: BaseState) -> AsyncIterator[ChatState]:
        redis, http = base["redis"], base["http"]
        async with open_llm_http(settings) as llm_http:
            llm = make_llm_client(settings, llm_http)
            gate = LlmGate(settings.llm_max_in_flight, settings.llm_queue_wait_s)
            summaries = SummaryStore(
                redis, settings.session_ttl_s, lock_s=settings.summary_timeout_s + 5
            )
            yield ChatState(
                chat=ChatService(
                    settings=settings,
                    llm=llm,
                    sessions=SessionStore(redis, settings.session_ttl_s),
                    characters=CharacterDirectory(
                        http, settings.characters_url, settings.character_cache_s
                    ),
                    voice=ReplyVoice(TtsClient(http, settings.tts_url, settings.tts_timeout_s)),
                    rate=ChatRateLimit(settings.redis_url, settings.chat_rate_per_min),
                    admission=Admission(
                        redis, settings.max_concurrent_users, settings.active_session_idle_s
                    ),
                    gate=gate,
                    windows=ContextWindows(
                        llm, settings.llm_context_tokens, retry_s=settings.models_cache_s
                    ),
                    context=ContextPlanner(llm, gate, summaries, settings),
                    catalog=ModelCatalog(llm, settings.default_model, settings.models_cache_s),
                )
            )

    return create_service_app(
        service="chat",
        title="Avatar Forge chat",
        description="Role-play conversations with characters over Ollama or vLLM.",
        settings=settings,
        routers=[router],
        upstream_checks={"llm": llm_check(settings)},
        state=chat_state,
        streams_responses=True,
    )
