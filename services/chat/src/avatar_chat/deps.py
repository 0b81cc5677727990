"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_chat.service import ChatService


async def _chat(request: Request) -> ChatService:
    return request.state.chat


ChatDep = Annotated[ChatService, Depends(_chat)]
