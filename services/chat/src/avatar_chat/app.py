from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from avatar_chat.admission import Admission
from avatar_chat.characters import CharacterDirectory
from avatar_chat.clients import make_llm_client, open_llm_http
from avatar_chat.context import ContextPlanner
from avatar_chat.conversation import ChatDeps
from avatar_chat.gate import LlmGate
from avatar_chat.models import ModelCatalog
from avatar_chat.rate_limit import ChatRateLimit
from avatar_chat.routes import router
from avatar_chat.sessions import SessionStore
from avatar_chat.settings import ChatSettings
from avatar_chat.speech import SpeechClient
from avatar_chat.summaries import SummaryStore
from avatar_chat.upstreams import llm_check
from avatar_chat.windows import ContextWindows
from avatar_shared.app import create_service_app


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()

    @asynccontextmanager
    async def chat_state(app: FastAPI) -> AsyncIterator[None]:
        async with open_llm_http(settings) as llm_http:
            llm = make_llm_client(settings, llm_http)
            gate = LlmGate(settings.llm_max_in_flight, settings.llm_queue_wait_s)
            summaries = SummaryStore(
                app.state.redis, settings.session_ttl_s, lock_s=settings.summary_timeout_s + 5
            )
            app.state.chat = ChatDeps(
                settings=settings,
                llm=llm,
                sessions=SessionStore(app.state.redis, settings.session_ttl_s),
                characters=CharacterDirectory(
                    app.state.http, settings.characters_url, settings.character_cache_s
                ),
                speech=SpeechClient(app.state.http, settings.tts_url, settings.tts_timeout_s),
                admission=Admission(
                    app.state.redis, settings.max_concurrent_users, settings.active_session_idle_s
                ),
                gate=gate,
                rate_limit=ChatRateLimit(settings.redis_url, settings.chat_rate_per_min),
                windows=ContextWindows(
                    llm, settings.llm_context_tokens, retry_s=settings.models_cache_s
                ),
                context=ContextPlanner(llm, gate, summaries, settings),
            )
            app.state.model_catalog = ModelCatalog(
                llm, settings.default_model, settings.models_cache_s
            )
            yield

    return create_service_app(
        service="chat",
        title="Avatar Forge chat",
        description="Role-play conversations with characters over Ollama or vLLM.",
        settings=settings,
        routers=[router],
        upstream_checks={"llm": llm_check(settings)},
        extra_lifespan=chat_state,
        streams_responses=True,
    )
