"""The tts service: speech of a reply (`POST /api/tts`), and where its audio files live."""

import secrets

import httpx

from avatar_shared.identity import Identity
from avatar_shared.peers import PeerClient, PeerError, PeerRejected, PeerUnavailable
from avatar_shared.speech import MAX_SPEECH_CHARS


def audio_url(user_id: str, file_id: str) -> str:
    """Where tts serves the WAV it stores under `file_id` for that user."""
    return f"/mnt/user_assets/{user_id}/audio/{file_id}.wav"


def new_file_id() -> str:
    """An id in the form tts accepts as `file_id` (16 to 64 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def failure_text(exc: PeerError) -> str:
    """Why there is no speech, for a reply's `tts_error`."""
    if isinstance(exc, PeerRejected):
        return f"The tts service answered {exc.status_code}: {exc.message}"
    return exc.message


class TtsClient:
    def __init__(self, http: httpx.AsyncClient, tts_url: str, timeout_s: float) -> None:
        self.peer = PeerClient(http, "tts", tts_url, timeout_s=timeout_s)

    async def speak(
        self,
        caller: Identity,
        text: str,
        voice_id: str | None,
        streaming_mode: int,
        file_id: str | None = None,
        progressive: bool = False,
    ) -> str:
        """The audio_url of `text` spoken in `voice_id` (the default voice when None), stored
        as the caller's (tts checks the forwarded credentials again); `PeerError` when tts
        cannot. `progressive` (with streaming_mode > 0): the URL once the speech has begun,
        serving the audio as it is made (its duration and size not known yet)."""
        body: dict[str, object] = {
            "text": text[:MAX_SPEECH_CHARS],  # a longer reply is cut to what tts takes
            "streaming_mode": streaming_mode,
        }
        if voice_id:
            body["voice_id"] = voice_id
        if file_id:
            body["file_id"] = file_id
        if progressive:
            body["progressive"] = True
        data = await self.peer.post("/api/tts", body, headers=caller.forward_headers)
        url = data.get("audio_url") if isinstance(data, dict) else None
        if not isinstance(url, str):
            raise PeerUnavailable("tts", "sent a malformed answer")
        return url
