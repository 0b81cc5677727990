from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from avatar_chat.deps import ChatDep
from avatar_chat.errors import (
    LlmBusy,
    LlmError,
    LlmTimeout,
    LlmUnavailable,
    ModelNotFound,
    SessionNotFound,
    TooManyUsers,
)
from avatar_chat.flows import reply_turn, stream_turn
from avatar_chat.limits.stalled import WriteTimedStream
from avatar_chat.schemas import (
    SSE_RESPONSE,
    ChatReply,
    ChatRequest,
    Deleted,
    ModelList,
    SessionHistory,
)
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    JSON_BODY,
    PARAMETERS,
    STORE_WRITES,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.peers import PeerRejected, PeerUnavailable
from avatar_shared.rate import RATE_ERRORS, CallerDep
from avatar_shared.streaming import SSE_HEADERS

router = APIRouter(prefix="/api/chat", tags=["chat"], responses=error_responses(COMMON))

# What asking the LLM can answer (the model list, a reply).
LLM_ERRORS = (LlmError, LlmUnavailable, LlmTimeout)
# The `character_id` and `user_persona_id`, from the characters service: its 404s are passed on.
CHARACTER_ERRORS = (
    PeerRejected("characters", 404, "character_not_found", "Character '…' does not exist."),
    PeerRejected(
        "characters",
        404,
        "persona_not_found",
        "Persona '…' does not exist among yours (see GET /api/personas).",
    ),
    PeerUnavailable("characters", "is unreachable or failed"),
)


@router.post(
    "",
    response_model=Envelope[ChatReply],
    responses={
        **SSE_RESPONSE,
        **error_responses(
            JSON_BODY,
            WRITER_ERRORS,
            RATE_ERRORS,
            (TooManyUsers, ModelNotFound, SessionNotFound, LlmBusy),
            LLM_ERRORS,
            CHARACTER_ERRORS,
            STORE_WRITES,
        ),
    },
)
async def chat(
    body: ChatRequest, chat: ChatDep, caller: CallerDep
) -> Envelope[ChatReply] | WriteTimedStream:
    if body.stream:
        events = await stream_turn(chat, body, caller)
        timeout_s = chat.settings.stream_write_timeout_s
        return WriteTimedStream(events, timeout_s, "text/event-stream", SSE_HEADERS)
    return ok(await reply_turn(chat, body, caller))


@router.get("/models", response_model=Envelope[ModelList], responses=error_responses(LLM_ERRORS))
async def list_models(chat: ChatDep) -> Envelope[ModelList]:
    return ok(ModelList(models=await chat.models()))


@router.get(
    "/sessions/{session_id}",
    response_model=Envelope[SessionHistory],
    responses=error_responses(PARAMETERS, CALLER_ERRORS, SessionNotFound),
)
async def get_session(
    session_id: UUID,
    user_id: UserId,
    chat: ChatDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    before: Annotated[int | None, Query(ge=0, description="From `next_before`.")] = None,
) -> Envelope[SessionHistory]:
    return ok(await chat.history(str(session_id), user_id, limit, before))


@router.delete(
    "/sessions/{session_id}",
    response_model=Envelope[Deleted],
    responses=error_responses(PARAMETERS, WRITER_ERRORS, SessionNotFound),
)
async def delete_session(session_id: UUID, caller: CallerDep, chat: ChatDep) -> Envelope[Deleted]:
    await chat.delete_session(str(session_id), caller)
    return ok(Deleted(session_id=str(session_id), deleted=True))
