from fastapi import APIRouter

from avatar_chat.schemas import ChatReply, ChatRequest, ModelList
from avatar_shared.envelope import Envelope
from avatar_shared.errors import ERROR_RESPONSES, not_built
from avatar_shared.identity import UserId

router = APIRouter(prefix="/api/chat", tags=["chat"], responses=ERROR_RESPONSES)


@router.post("", response_model=Envelope[ChatReply])
async def chat(body: ChatRequest, user_id: UserId) -> Envelope[ChatReply]:
    not_built("POST /api/chat")


@router.get("/models", response_model=Envelope[ModelList])
async def list_models() -> Envelope[ModelList]:
    not_built("GET /api/chat/models")


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, user_id: UserId) -> Envelope[dict]:
    not_built("GET /api/chat/sessions/{session_id}")


@router.delete("/sessions/{session_id}")
async def delete_session(session_id: str, user_id: UserId) -> Envelope[dict]:
    not_built("DELETE /api/chat/sessions/{session_id}")
