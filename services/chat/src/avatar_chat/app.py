from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request

from avatar_chat.adoption import router as adoption_router
from avatar_chat.deps import ChatState
from avatar_chat.llm import open_llm_http
from avatar_chat.llm.health import llm_check
from avatar_chat.memory.routes import router as memory_router
from avatar_chat.metrics import CHAT_ACTIVE_SESSIONS
from avatar_chat.routes import router as chat_router
from avatar_chat.service import ChatService
from avatar_chat.settings import ChatSettings
from avatar_shared.app import create_service_app
from avatar_shared.state import BaseState, lifespan_state


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()

    async def chat_state(base: BaseState) -> AsyncIterator[ChatState]:
        async with open_llm_http(settings) as llm_http:
            chat = ChatService(settings, base["redis"], base["http"], llm_http)
            # Quiet conversations are read for memories by whichever replica sweeps first.
            chat.learner.start_sweeping()
            chat.characters.follow_changes(base["redis"])
            try:
                yield ChatState(chat=chat)
            finally:  # background work ends before Redis and the LLM client close
                await chat.characters.close()
                await chat.learner.close()
                await chat.context.close()

    async def scrape(request: Request) -> None:
        chat = lifespan_state(request, ChatState)["chat"]
        CHAT_ACTIVE_SESSIONS.set(await chat.admission.active())

    checks = {"llm": llm_check(settings)}
    router = APIRouter()
    router.include_router(chat_router)
    router.include_router(memory_router)
    router.include_router(adoption_router)  # a peer's call at sign-in, not public
    return create_service_app(
        "chat",
        settings,
        router,
        state=chat_state,
        upstream_checks=checks,
        scrape=scrape,
    )
