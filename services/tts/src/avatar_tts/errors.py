"""Every error of the tts service, each with the status and code of the envelope."""

from avatar_shared.errors import AppError, NamedNotFound, NotFound, upstream_errors


class VoiceNotFound(NamedNotFound):
    code, what, hint = "voice_not_found", "Voice", "; see GET /api/tts/voices"


# Not a file this service gave out, or one evicted since.
class AudioNotFound(NotFound):
    message = "No such audio file."


# The speech server refused these parameters (its 400): the request must change.
class TtsRejected(AppError):
    status_code, code, message = 422, "tts_rejected", "The speech server refused the request."


# Unreachable (503), too slow (504: no next bytes within TTS_TIMEOUT_S, or another request
# still making the same speech), failed (502: an error answer or broken off).
TtsUnavailable, TtsTimeout, TtsError = upstream_errors("tts", "The speech server")
