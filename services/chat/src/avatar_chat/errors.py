"""Every error of the chat service, each with the status and code API.md's envelope carries.
(A peer service that fails answers `PeerUnavailable`, code `<service>_unavailable`.)"""

from avatar_shared.errors import (
    AppError,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class LlmUnavailable(ServiceUnavailable):
    code, message = "llm_unavailable", "The language model server is unreachable."


class LlmTimeout(UpstreamTimeout):
    code, message = "llm_timeout", "The language model server did not answer in time."


class LlmError(UpstreamError):
    code, message = "llm_error", "The language model server failed."


class LlmBusy(ServiceUnavailable):
    code, message = "llm_busy", "The language model is busy; try again in a moment."


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"Model '{model}' is not available on the language model server.")


class CharacterNotFound(NotFound):
    code = "character_not_found"

    def __init__(self, character_id: str) -> None:
        super().__init__(f"Character '{character_id}' does not exist.")


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Chat session '{session_id}' does not exist.")


class TooManyUsers(ServiceUnavailable):
    code = "too_many_users"


class LimiterUnavailable(ServiceUnavailable):
    code = "limiter_unavailable"
    message = "The chat is not taking new requests right now (its limiter is unavailable)."


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"
