from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from avatar_chat.deps import ChatDep
from avatar_chat.flows import reply_turn, stream_turn
from avatar_chat.schemas import (
    SSE_RESPONSE,
    ChatReply,
    ChatRequest,
    Deleted,
    ModelList,
    SessionHistory,
)
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import ERROR_RESPONSES
from avatar_shared.identity import UserId
from avatar_shared.rate import CallerDep
from avatar_shared.streaming import SSE_HEADERS

router = APIRouter(prefix="/api/chat", tags=["chat"], responses=ERROR_RESPONSES)


@router.post("", response_model=Envelope[ChatReply], responses=SSE_RESPONSE)
async def chat(
    body: ChatRequest, chat: ChatDep, caller: CallerDep
) -> Envelope[ChatReply] | StreamingResponse:
    if body.stream:
        events = await stream_turn(chat, body, caller)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return ok(await reply_turn(chat, body, caller))


@router.get("/models", response_model=Envelope[ModelList])
async def list_models(chat: ChatDep) -> Envelope[ModelList]:
    return ok(ModelList(models=await chat.models()))


@router.get("/sessions/{session_id}", response_model=Envelope[SessionHistory])
async def get_session(
    session_id: UUID,
    user_id: UserId,
    chat: ChatDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    before: Annotated[int | None, Query(ge=0, description="From `next_before`.")] = None,
) -> Envelope[SessionHistory]:
    return ok(await chat.history(str(session_id), user_id, limit, before))


@router.delete("/sessions/{session_id}", response_model=Envelope[Deleted])
async def delete_session(session_id: UUID, caller: CallerDep, chat: ChatDep) -> Envelope[Deleted]:
    await chat.delete_session(str(session_id), caller)
    return ok(Deleted(session_id=str(session_id), deleted=True))
