"""Every error of the tts service, each with the status and code of the envelope."""

from avatar_shared.errors import (
    AppError,
    Conflict,
    NamedNotFound,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class VoiceNotFound(NamedNotFound):
    code, what, hint = "voice_not_found", "Voice", "; see GET /api/tts/voices"


# Not a file this service gave out, or one evicted since.
class AudioNotFound(NotFound):
    message = "No such audio file."


class FileIdTaken(Conflict):
    """A URL of ours never changes what it serves (it is cached as immutable)."""

    code, message = "file_id_taken", "file_id '…' is already in use; ids are never reused."

    def __init__(self, file_id: str) -> None:
        super().__init__(f"file_id '{file_id}' is already in use; ids are never reused.")


# The speech server refused these parameters (its 400): the request must change.
class TtsRejected(AppError):
    status_code, code, message = 422, "tts_rejected", "The speech server refused the request."


# Unreachable.
class TtsUnavailable(ServiceUnavailable):
    code, message = "tts_unavailable", "The speech server is unreachable."


# Too slow: no next bytes within TTS_TIMEOUT_S, or another request still making the same speech.
class TtsTimeout(UpstreamTimeout):
    code, message = "tts_timeout", "The speech server did not answer in time."


# Failed: an error answer, or broken off.
class TtsError(UpstreamError):
    code, message = "tts_error", "The speech server failed."


# No synthesis slot of this replica came free within TTS_QUEUE_WAIT_S.
class TtsBusy(ServiceUnavailable):
    code, message = "tts_busy", "The speech server is busy; try again in a moment."
