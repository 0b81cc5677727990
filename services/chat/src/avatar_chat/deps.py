"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_chat.service import ChatService
from avatar_chat.turn import Caller
from avatar_shared.identity import CallerIdentity
from avatar_shared.rate import caller_key


def _chat(request: Request) -> ChatService:
    return request.state.chat


def _caller(identity: CallerIdentity, request: Request) -> Caller:
    return Caller(identity, caller_key(identity, request))


ChatDep = Annotated[ChatService, Depends(_chat)]
CallerDep = Annotated[Caller, Depends(_caller)]
