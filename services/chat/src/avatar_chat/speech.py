"""Speech for chat replies, asked of the tts service over HTTP (`POST {TTS_URL}/api/tts`).

A speech failure never fails the chat: the caller gets the text with `audio_url: null` and
`tts_error` saying why.
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import httpx

from avatar_chat.sentences import SentenceSplitter

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


class SentenceSpeaker:
    """Speaks a streamed reply sentence by sentence: each sentence goes to the tts service as
    soon as it is complete (at most `parallel` at once), and the results come back in order."""

    def __init__(
        self, speech: SpeechClient, voice_id: str | None, streaming_mode: int, parallel: int = 2
    ) -> None:
        self.speech = speech
        self.voice_id = voice_id
        self.streaming_mode = streaming_mode
        self.splitter = SentenceSplitter()
        self.slots = asyncio.Semaphore(parallel)
        self.pending: list[tuple[str, asyncio.Task[tuple[str | None, str | None]]]] = []
        self.sent = 0
        self.urls: list[str] = []

    def feed(self, text: str) -> None:
        for sentence in self.splitter.feed(text):
            self._start(sentence)

    def finish(self) -> None:
        for sentence in self.splitter.flush():
            self._start(sentence)

    def ready(self) -> list[dict[str, object]]:
        """`audio` events whose turn has come and whose speech is done."""
        events = []
        while self.sent < len(self.pending) and self.pending[self.sent][1].done():
            events.append(self._event(self.pending[self.sent][1].result()))
        return events

    async def rest(self) -> AsyncIterator[dict[str, object]]:
        while self.sent < len(self.pending):
            yield self._event(await self.pending[self.sent][1])

    def cancel(self) -> None:
        for _, task in self.pending[self.sent :]:
            task.cancel()

    def _start(self, sentence: str) -> None:
        self.pending.append((sentence, asyncio.create_task(self._speak(sentence))))

    async def _speak(self, sentence: str) -> tuple[str | None, str | None]:
        async with self.slots:
            try:
                return await self.speech.speak(sentence, self.voice_id, self.streaming_mode), None
            except SpeechFailed as exc:
                return None, str(exc)

    def _event(self, outcome: tuple[str | None, str | None]) -> dict[str, object]:
        url, error = outcome
        event: dict[str, object] = {
            "index": self.sent,
            "text": self.pending[self.sent][0],
            "audio_url": url,
        }
        if error:
            event["tts_error"] = error
        if url:
            self.urls.append(url)
        self.sent += 1
        return event
