"""Speech of a whole reply, as the request's `tts_mode` asks: `realtime` speaks it before the
answer, `delayed` answers at once with the URL the audio will have, `on_click` makes none (the
client calls /api/tts itself). A streamed reply with realtime speech is spoken by sentence."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avatar_chat.peers.tts import TtsClient, audio_url, failure_text, new_file_id
from avatar_chat.schemas import GenerationOptions
from avatar_chat.speech.speaker import SentenceSpeaker
from avatar_shared.identity import Identity
from avatar_shared.peers import PeerError

logger = logging.getLogger("avatar.chat.speech")


class ReplyVoice:
    def __init__(self, tts: TtsClient) -> None:
        self.tts = tts
        self._pending: set[asyncio.Task[None]] = set()  # keeps background tasks alive

    async def speak(
        self, body: GenerationOptions, voice_id: str | None, text: str, caller: Identity
    ) -> tuple[str | None, str | None]:
        """(audio_url, tts_error) for a whole reply."""
        if not body.tts_enabled or body.tts_mode == "on_click":
            return None, None
        if body.tts_mode == "delayed":
            return self._speak_later(text, voice_id, body, caller), None
        try:
            return await self.tts.speak(caller, text, voice_id, body.tts_streaming_mode), None
        except PeerError as exc:
            return None, failure_text(exc)

    @asynccontextmanager
    async def speaker(
        self, body: GenerationOptions, voice_id: str | None, caller: Identity
    ) -> AsyncIterator[SentenceSpeaker]:
        """For a streamed reply: speech that follows the text, per sentence (with realtime
        speech; else a speaker that says nothing). What it has not delivered when the block
        ends is cancelled."""
        realtime = body.tts_enabled and body.tts_mode == "realtime"
        speaker = SentenceSpeaker(
            self.tts, caller, voice_id, body.tts_streaming_mode, speaks=realtime
        )
        try:
            yield speaker
        finally:
            speaker.cancel()

    def _speak_later(
        self, text: str, voice_id: str | None, body: GenerationOptions, caller: Identity
    ) -> str:
        """The URL now, the audio after `tts_delay_ms` (until then the URL answers 404)."""
        file_id = new_file_id()

        async def later() -> None:
            await asyncio.sleep(body.tts_delay_ms / 1000)
            try:
                await self.tts.speak(caller, text, voice_id, body.tts_streaming_mode, file_id)
            except PeerError as exc:
                logger.warning("delayed speech failed: %s", exc)

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return audio_url(caller.user_id, file_id)
