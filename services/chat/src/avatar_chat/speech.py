"""Speech for chat replies, asked of the tts service over HTTP (`POST {TTS_URL}/api/tts`).

A speech failure never fails the chat: the caller gets the text with `audio_url: null` and
`tts_error` saying why.
"""

import asyncio
import logging
import secrets

import httpx

logger = logging.getLogger("avatar.chat.speech")


class SpeechFailed(Exception):
    pass


class SpeechClient:
    def __init__(self, http: httpx.AsyncClient, tts_url: str, timeout_s: float) -> None:
        self.http = http
        self.url = f"{tts_url.rstrip('/')}/api/tts"
        self.timeout_s = timeout_s
        self._pending: set[asyncio.Task[None]] = set()  # keeps background tasks alive

    async def speak(
        self, text: str, voice_id: str | None, streaming_mode: int, file_id: str | None = None
    ) -> str:
        """The audio_url of `text` spoken in `voice_id` (the default voice when None)."""
        body: dict[str, object] = {"text": text[:1000], "streaming_mode": streaming_mode}
        if voice_id:
            body["voice_id"] = voice_id
        if file_id:
            body["file_id"] = file_id
        try:
            response = await self.http.post(self.url, json=body, timeout=self.timeout_s)
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SpeechFailed(
                f"The speech service is unreachable ({type(exc).__name__})."
            ) from exc
        if response.status_code != 200:
            message = (data.get("error") or {}).get("message", "") if isinstance(data, dict) else ""
            raise SpeechFailed(f"The speech service answered {response.status_code}: {message}")
        return data["data"]["audio_url"]

    def speak_later(
        self, text: str, voice_id: str | None, streaming_mode: int, user_id: str, delay_ms: int
    ) -> str:
        """tts_mode=delayed: the URL now, the audio after `delay_ms` (until then the URL
        answers 404)."""
        file_id = secrets.token_urlsafe(16)

        async def later() -> None:
            await asyncio.sleep(delay_ms / 1000)
            try:
                await self.speak(text, voice_id, streaming_mode, file_id)
            except SpeechFailed as exc:
                logger.warning("delayed speech failed: %s", exc)

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return f"/mnt/user_assets/{user_id}/audio/{file_id}.wav"
