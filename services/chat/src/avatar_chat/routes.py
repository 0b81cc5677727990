from collections.abc import Awaitable
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from avatar_chat.conversations import actions
from avatar_chat.conversations.upload import IMPORT_BODY, JSONL, UPLOAD_ERRORS, read_import
from avatar_chat.deps import ChatDep
from avatar_chat.errors import (
    ContextTooLong,
    ConversationBusy,
    ConversationFull,
    LlmBusy,
    LlmError,
    LlmTimeout,
    LlmUnavailable,
    MessageNotFound,
    ModelNotFound,
    NotAConversation,
    NothingToSteer,
    QuotaExceeded,
    SessionNotFound,
    TooManyUsers,
)
from avatar_chat.flows import Steer, reply_turn, stream_turn
from avatar_chat.limits.stalled import WriteTimedStream
from avatar_chat.schemas import (
    SSE_RESPONSE,
    BranchPoint,
    ChatReply,
    ChatRequest,
    Conversation,
    ConversationChange,
    ConversationPage,
    Deleted,
    GenerationOptions,
    MessageDeleted,
    MessageEdit,
    ModelList,
    Released,
    SessionHistory,
    StartConversation,
    StoredMessage,
    SwipeChoice,
)
from avatar_chat.service import ChatService
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    JSON_BODY,
    PARAMETERS,
    STORE_WRITES,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.pages import TIME_AND_ID
from avatar_shared.peers import PeerRejected, PeerUnavailable
from avatar_shared.rate import RATE_ERRORS, Caller, CallerDep
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


# Starting a conversation (a new one, a branch, an import): the quota and the caps.
STARTS = (QuotaExceeded, ConversationFull, STORE_WRITES)
# A change of one message of a conversation kept on the server.
MESSAGE_ERRORS = (
    WRITER_ERRORS,
    SessionNotFound,
    MessageNotFound,
    NotAConversation,
    ConversationBusy,
    ConversationFull,
    STORE_WRITES,
)
# What any turn may answer, besides its own input errors.
TURN_ERRORS = (
    WRITER_ERRORS,
    RATE_ERRORS,
    (TooManyUsers, ModelNotFound, SessionNotFound, LlmBusy, ContextTooLong),
    LLM_ERRORS,
    CHARACTER_ERRORS,
    STORE_WRITES,
)
# A turn or a change of a conversation kept on the server.
STEER_ERRORS = (NotAConversation, ConversationBusy, ConversationFull)


def _answered(
    steer: Steer, chat: ChatService, caller: Caller, request: Request
) -> Awaitable[Envelope[ChatReply] | WriteTimedStream]:
    async def answer() -> Envelope[ChatReply] | WriteTimedStream:
        if steer.options.stream:
            # The body is read: until the response starts, the turn watches for the client.
            events = await stream_turn(chat, steer, caller, request.receive)
            timeout_s = chat.settings.stream_write_timeout_s
            return WriteTimedStream(events, timeout_s, "text/event-stream", SSE_HEADERS)
        return ok(await reply_turn(chat, steer, caller))

    return answer()


@router.post(
    "",
    response_model=Envelope[ChatReply],
    responses={**SSE_RESPONSE, **error_responses(JSON_BODY, *TURN_ERRORS, STEER_ERRORS)},
)
async def chat(
    body: ChatRequest, chat: ChatDep, caller: CallerDep, request: Request
) -> Envelope[ChatReply] | WriteTimedStream:
    return await _answered(Steer.of(body), chat, caller, request)


@router.get("/models", response_model=Envelope[ModelList], responses=error_responses(LLM_ERRORS))
async def list_models(chat: ChatDep) -> Envelope[ModelList]:
    return ok(ModelList(models=await chat.models()))


# --- conversations ----------------------------------------------------------------------------

Session = Annotated[UUID, Path(description="The conversation's session id.")]
MessageId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
LIBRARY_CURSOR = TIME_AND_ID


@router.post(
    "/sessions",
    response_model=Envelope[SessionHistory],
    status_code=201,
    summary="Start a conversation kept on the server, opened by the character's greeting",
    responses=error_responses(JSON_BODY, WRITER_ERRORS, RATE_ERRORS, CHARACTER_ERRORS, STARTS),
)
async def start_conversation(
    body: StartConversation, chat: ChatDep, caller: CallerDep
) -> Envelope[SessionHistory]:
    return ok(await actions.start(chat, body, caller))


@router.get(
    "/sessions",
    response_model=Envelope[ConversationPage],
    summary="The caller's conversations: pinned first, then the most recently active",
    responses=error_responses(PARAMETERS, CALLER_ERRORS),
)
async def list_conversations(
    user_id: UserId,
    chat: ChatDep,
    after: Annotated[tuple[float, str] | None, Depends(LIBRARY_CURSOR.query())],
    character_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Envelope[ConversationPage]:
    page = await chat.sessions.library(user_id, character_id, limit, after)
    items = [Conversation.model_validate(item) for item in page.items]
    return ok(ConversationPage(conversations=items, next_cursor=LIBRARY_CURSOR.next_of(page)))


@router.post(
    "/sessions/import",
    response_model=Envelope[SessionHistory],
    status_code=201,
    summary="Import a SillyTavern chat (JSONL) as a new conversation with a character",
    responses=error_responses(WRITER_ERRORS, RATE_ERRORS, CHARACTER_ERRORS, STARTS, UPLOAD_ERRORS),
    openapi_extra={"requestBody": IMPORT_BODY},
)
async def import_conversation(
    request: Request, chat: ChatDep, caller: CallerDep
) -> Envelope[SessionHistory]:
    data, setup = await read_import(request, chat.settings)
    return ok(await actions.import_chat(chat, data, setup, caller))


@router.get(
    "/sessions/{session_id:uuid}",
    response_model=Envelope[SessionHistory],
    responses=error_responses(PARAMETERS, CALLER_ERRORS, SessionNotFound),
)
async def get_session(
    session_id: Session,
    user_id: UserId,
    chat: ChatDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    before: Annotated[int | None, Query(ge=0, description="From `next_before`.")] = None,
) -> Envelope[SessionHistory]:
    return ok(await chat.history(str(session_id), user_id, limit, before))


@router.patch(
    "/sessions/{session_id:uuid}",
    response_model=Envelope[Conversation],
    summary="Rename or pin a conversation, or set its memory mode",
    responses=error_responses(JSON_BODY, WRITER_ERRORS, SessionNotFound, ConversationBusy),
)
async def change_conversation(
    session_id: Session, body: ConversationChange, chat: ChatDep, caller: CallerDep
) -> Envelope[Conversation]:
    changed = await actions.rename(chat, str(session_id), body, caller)
    return ok(Conversation.model_validate(changed))


@router.delete(
    "/sessions/{session_id:uuid}",
    response_model=Envelope[Deleted],
    responses=error_responses(PARAMETERS, WRITER_ERRORS, SessionNotFound, ConversationBusy),
)
async def delete_session(
    session_id: Session, caller: CallerDep, chat: ChatDep
) -> Envelope[Deleted]:
    await chat.delete_session(str(session_id), caller)
    return ok(Deleted(session_id=str(session_id), deleted=True))


@router.post(
    "/sessions/{session_id:uuid}/release",
    response_model=Envelope[Released],
    summary="Free the session's place among the active ones; the conversation stays",
    responses=error_responses(PARAMETERS, WRITER_ERRORS, SessionNotFound),
)
async def release_session(
    session_id: Session, caller: CallerDep, chat: ChatDep
) -> Envelope[Released]:
    await chat.release(str(session_id), caller)
    return ok(Released(session_id=str(session_id), released=True))


@router.post(
    "/sessions/{session_id:uuid}/regenerate",
    response_model=Envelope[ChatReply],
    summary="A new alternate for the last reply (the earlier ones kept); streams like chat",
    responses={
        **SSE_RESPONSE,
        **error_responses(JSON_BODY, *TURN_ERRORS, STEER_ERRORS, NothingToSteer),
    },
)
async def regenerate(
    session_id: Session, body: GenerationOptions, chat: ChatDep, caller: CallerDep, request: Request
) -> Envelope[ChatReply] | WriteTimedStream:
    return await _answered(Steer("regenerate", body, str(session_id)), chat, caller, request)


@router.post(
    "/sessions/{session_id:uuid}/continue",
    response_model=Envelope[ChatReply],
    summary="Extend the last reply; `content` and the deltas are the new text only",
    responses={
        **SSE_RESPONSE,
        **error_responses(JSON_BODY, *TURN_ERRORS, STEER_ERRORS, NothingToSteer),
    },
)
async def continue_reply(
    session_id: Session, body: GenerationOptions, chat: ChatDep, caller: CallerDep, request: Request
) -> Envelope[ChatReply] | WriteTimedStream:
    return await _answered(Steer("continue", body, str(session_id)), chat, caller, request)


@router.put(
    "/sessions/{session_id:uuid}/messages/{message_id}/swipe",
    response_model=Envelope[StoredMessage],
    summary="Choose which alternate of a message is shown (and seen by the model)",
    responses=error_responses(JSON_BODY, *MESSAGE_ERRORS),
)
async def choose_swipe(
    session_id: Session, message_id: MessageId, body: SwipeChoice, chat: ChatDep, caller: CallerDep
) -> Envelope[StoredMessage]:
    changed = await actions.swipe(chat, str(session_id), message_id, body.index, caller)
    return ok(StoredMessage.model_validate(changed))


@router.patch(
    "/sessions/{session_id:uuid}/messages/{message_id}",
    response_model=Envelope[StoredMessage],
    summary="Edit a message (a reply: its alternate shown)",
    responses=error_responses(JSON_BODY, *MESSAGE_ERRORS),
)
async def edit_message(
    session_id: Session, message_id: MessageId, body: MessageEdit, chat: ChatDep, caller: CallerDep
) -> Envelope[StoredMessage]:
    changed = await actions.edit(chat, str(session_id), message_id, body, caller)
    return ok(StoredMessage.model_validate(changed))


@router.delete(
    "/sessions/{session_id:uuid}/messages/{message_id}",
    response_model=Envelope[MessageDeleted],
    responses=error_responses(PARAMETERS, *MESSAGE_ERRORS),
)
async def delete_message(
    session_id: Session, message_id: MessageId, chat: ChatDep, caller: CallerDep
) -> Envelope[MessageDeleted]:
    await actions.delete_message(chat, str(session_id), message_id, caller)
    return ok(MessageDeleted(message_id=message_id, deleted=True))


@router.post(
    "/sessions/{session_id:uuid}/branch",
    response_model=Envelope[SessionHistory],
    status_code=201,
    summary="A new conversation from this one's messages up to and with `message_id`",
    responses=error_responses(JSON_BODY, *MESSAGE_ERRORS, RATE_ERRORS, STARTS, CHARACTER_ERRORS),
)
async def branch(
    session_id: Session, body: BranchPoint, chat: ChatDep, caller: CallerDep
) -> Envelope[SessionHistory]:
    return ok(await actions.branch(chat, str(session_id), body.message_id, caller))


@router.get(
    "/sessions/{session_id:uuid}/export",
    summary="The conversation as a SillyTavern chat file (JSONL)",
    response_class=Response,
    responses={
        200: {"content": {JSONL: {"schema": {"type": "string"}}}},
        **error_responses(PARAMETERS, CALLER_ERRORS, SessionNotFound, NotAConversation),
        **error_responses(CHARACTER_ERRORS),
    },
)
async def export_conversation(session_id: Session, chat: ChatDep, caller: CallerDep) -> Response:
    filename, data = await actions.export(chat, str(session_id), caller)
    # Headers are Latin-1: a name in Hangul (the presets') goes as RFC 6266's filename*
    # (UTF-8, percent-encoded), with an ASCII stand-in for clients that read only filename.
    plain = filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"
    return Response(data, media_type=JSONL, headers={"Content-Disposition": disposition})
