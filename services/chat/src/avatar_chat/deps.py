"""What the routes need, as `Annotated` dependencies built from the app's lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_chat.conversation import ChatDeps
from avatar_chat.models import ModelCatalog


def _chat_deps(request: Request) -> ChatDeps:
    return request.app.state.chat


def _catalog(request: Request) -> ModelCatalog:
    return request.app.state.model_catalog


Chat = Annotated[ChatDeps, Depends(_chat_deps)]
Catalog = Annotated[ModelCatalog, Depends(_catalog)]
