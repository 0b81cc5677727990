from fastapi import FastAPI

from avatar_chat.routes import router
from avatar_chat.settings import ChatSettings
from avatar_chat.upstreams import llm_check
from avatar_shared.app import create_service_app


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()
    return create_service_app(
        service="chat",
        title="Avatar Forge chat",
        description="Role-play conversations with characters over Ollama or vLLM.",
        settings=settings,
        routers=[router],
        streams_responses=True,
        upstream_checks={"llm": llm_check(settings)},
    )
