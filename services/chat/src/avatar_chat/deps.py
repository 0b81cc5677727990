"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from avatar_chat.service import ChatService
from avatar_shared.state import lifespan_state


class ChatState(TypedDict):
    """What the chat lifespan adds to the base state (see app.py)."""

    chat: ChatService


async def _chat(request: Request) -> ChatService:
    return lifespan_state(request, ChatState)["chat"]


ChatDep = Annotated[ChatService, Depends(_chat)]
