"""Every error of the tts service, each with the status and code of the envelope."""

from avatar_shared.errors import (
    AppError,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class VoiceNotFound(NotFound):
    code = "voice_not_found"

    def __init__(self, voice_id: str) -> None:
        super().__init__(f"Voice '{voice_id}' does not exist; see GET /api/tts/voices.")


class TtsRejected(AppError):
    """The speech server refused these parameters (its 400): the request must change."""

    status_code, code, message = 422, "tts_rejected", "The speech server refused the request."


class TtsUnavailable(ServiceUnavailable):
    code, message = "tts_unavailable", "The speech server is unreachable."


class TtsTimeout(UpstreamTimeout):
    code, message = "tts_timeout", "The speech server did not answer in time."


class TtsError(UpstreamError):
    code, message = "tts_error", "The speech server failed."


class AudioNotFound(NotFound):
    message = "No such audio file."
