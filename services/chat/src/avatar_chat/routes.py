from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from avatar_chat.conversation import open_stream, reply_once
from avatar_chat.deps import Catalog, Chat
from avatar_chat.rate_limit import rate_key
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

router = APIRouter(prefix="/api/chat", tags=["chat"], responses=ERROR_RESPONSES)

# Proxies must pass events on at once rather than collect them.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("", response_model=Envelope[ChatReply], responses=SSE_RESPONSE)
async def chat(
    body: ChatRequest, user_id: UserId, deps: Chat, request: Request
) -> Envelope[ChatReply] | StreamingResponse:
    key = rate_key(user_id, request)
    if body.stream:
        events = await open_stream(body, user_id, key, deps)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return ok(await reply_once(body, user_id, key, deps))


@router.get("/models", response_model=Envelope[ModelList])
async def list_models(catalog: Catalog) -> Envelope[ModelList]:
    return ok(ModelList(models=await catalog.models()))


@router.get("/sessions/{session_id}", response_model=Envelope[SessionHistory])
async def get_session(session_id: UUID, user_id: UserId, deps: Chat) -> Envelope[SessionHistory]:
    history = await deps.sessions.history(str(session_id), user_id)
    return ok(SessionHistory.model_validate(history))


@router.delete("/sessions/{session_id}", response_model=Envelope[Deleted])
async def delete_session(session_id: UUID, user_id: UserId, deps: Chat) -> Envelope[Deleted]:
    await deps.sessions.delete(str(session_id), user_id)
    await deps.admission.release(str(session_id))  # its place goes to the next user
    return ok(Deleted(session_id=str(session_id), deleted=True))
