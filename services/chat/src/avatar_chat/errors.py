"""The chat service's errors, each with the status and code API.md's envelope carries."""

from avatar_shared.errors import NotFound, ServiceUnavailable, UpstreamError, UpstreamTimeout


class LlmUnavailable(ServiceUnavailable):
    code, message = "llm_unavailable", "The language model server is unreachable."


class LlmTimeout(UpstreamTimeout):
    code, message = "llm_timeout", "The language model server did not answer in time."


class LlmError(UpstreamError):
    code, message = "llm_error", "The language model server failed."


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"Model '{model}' is not available on the language model server.")


class CharacterNotFound(NotFound):
    code = "character_not_found"

    def __init__(self, character_id: str) -> None:
        super().__init__(f"Character '{character_id}' does not exist.")


class CharactersUnavailable(ServiceUnavailable):
    code, message = "characters_unavailable", "The characters service is unavailable."


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Chat session '{session_id}' does not exist.")
