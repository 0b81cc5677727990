"""Every error of the chat service, each with the status and code API.md's envelope carries.

A peer service's failures are the shared `PeerUnavailable` (503 `<service>_unavailable`), and
its refusals are relayed as it gave them (an unknown `character_id`: the characters service's
404 `character_not_found`).
"""

from avatar_shared.errors import (
    Conflict,
    NamedNotFound,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)

# --- the LLM server -----------------------------------------------------------------------


# Unreachable.
class LlmUnavailable(ServiceUnavailable):
    code, message = "llm_unavailable", "The language model server is unreachable."


# Too slow: LLM_READ_TIMEOUT_S between bytes, LLM_TOTAL_TIMEOUT_S in all.
class LlmTimeout(UpstreamTimeout):
    code, message = "llm_timeout", "The language model server did not answer in time."


# Failed: an error answer, broken off, or malformed.
class LlmError(UpstreamError):
    code, message = "llm_error", "The language model server failed."


class ModelNotFound(NotFound):
    code, message = "model_not_found", "Model '…' is not available on the language model server."

    def __init__(self, model: str) -> None:
        super().__init__(f"Model '{model}' is not available on the language model server.")


# --- the limits ---------------------------------------------------------------------------
# (Past CHAT_RATE_PER_MIN, or Redis unreachable: the shared `rate_limited` and
# `limiter_unavailable` of avatar_shared.rate.)


# MAX_CONCURRENT_USERS sessions are active and this one is new.
class TooManyUsers(ServiceUnavailable):
    code = "too_many_users"
    message = "As many chat sessions are active as may be at once; try again after Retry-After s."


# No LLM slot of this replica came free within LLM_QUEUE_WAIT_S.
class LlmBusy(ServiceUnavailable):
    code, message = "llm_busy", "The language model is busy; try again in a moment."


# --- sessions -----------------------------------------------------------------------------


# Unknown, expired, or another user's (ids are not disclosed).
class SessionNotFound(NamedNotFound):
    code, what = "session_not_found", "Chat session"


# --- conversations kept on the server -------------------------------------------------------


class MessageNotFound(NamedNotFound):
    code, what = "message_not_found", "Message"


# A change (a turn, an edit, a swipe...) while a reply for the same conversation is generated:
# the reply was planned from the conversation as it was.
class ConversationBusy(Conflict):
    code = "conversation_busy"
    message = (
        "A reply for this conversation is being generated (or one just stopped is being "
        "saved); try again when it has ended."
    )

    def __init__(self, message: str | None = None) -> None:
        # When the turn ends is not known: Retry-After is a polling interval.
        super().__init__(message, headers={"Retry-After": "1"})


# Steering a session whose history its client sends (`messages`): the server's copy of it is
# a record, not the conversation.
class NotAConversation(Conflict):
    code = "not_a_conversation"
    message = (
        "This session's history is sent by its client (`messages`); only conversations "
        "started on the server (POST /api/chat/sessions, branch, import) can be steered."
    )


# A kept conversation is never trimmed: past its caps it takes no more.
class ConversationFull(Conflict):
    code, message = "conversation_full", "This conversation holds as much as it may."


class NothingToSteer(Conflict):
    code, message = "nothing_to_steer", "The conversation has no reply to act on."


class QuotaExceeded(Conflict):
    code, message = "quota_exceeded", "You keep as many conversations as you may."
