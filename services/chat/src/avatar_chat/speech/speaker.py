"""Speaks a streamed reply sentence by sentence, so the first audio starts long before the
reply is finished. When GPT-SoVITS streams (`tts_streaming_mode` > 0), the first sentence's
audio_url comes as soon as its speech has begun, and serves the audio as it is made."""

import asyncio
from collections.abc import AsyncIterator

from avatar_chat.peers.tts import TtsClient, failure_text
from avatar_chat.speech.sentences import SentenceSplitter
from avatar_shared.identity import Identity
from avatar_shared.peers import PeerError


class SentenceSpeaker:
    """Speaks a streamed reply sentence by sentence: each sentence goes to the tts service as
    soon as it is complete (at most `parallel` at once), and the results come back in order."""

    def __init__(
        self,
        tts: TtsClient,
        caller: Identity,
        voice_id: str | None,
        streaming_mode: int,
        speaks: bool = True,
        parallel: int = 2,
    ) -> None:
        self.speaks = speaks  # False: the reply is not spoken as it streams
        self.tts = tts
        self.caller = caller
        self.voice_id = voice_id
        self.streaming_mode = streaming_mode
        self.splitter = SentenceSplitter()
        self.slots = asyncio.Semaphore(parallel)
        self.pending: list[tuple[str, asyncio.Task[tuple[str | None, str | None]]]] = []
        self.sent = 0
        self.urls: list[str] = []
        self.errors: list[str] = []  # why the sentences delivered without audio have none

    def said(self, text: str) -> list[dict[str, object]]:
        """Takes the next text of the reply; returns the `audio` events whose turn has come
        and whose speech is done."""
        if not self.speaks:
            return []
        for sentence in self.splitter.feed(text):
            self._start(sentence)
        events = []
        while self.sent < len(self.pending) and self.pending[self.sent][1].done():
            events.append(self._event(self.pending[self.sent][1].result()))
        return events

    async def rest(self) -> AsyncIterator[dict[str, object]]:
        """The reply is complete: the `audio` events of every sentence not yet delivered."""
        if self.speaks:
            for sentence in self.splitter.flush():
                self._start(sentence)
        while self.sent < len(self.pending):
            yield self._event(await self.pending[self.sent][1])

    @property
    def failure(self) -> str | None:
        """Why the reply has no speech, for `done.tts_error`: when no sentence delivered got
        audio and at least one failed, their reasons (each once)."""
        if self.urls or not self.errors:
            return None
        return "; ".join(dict.fromkeys(self.errors))

    def cancel(self) -> None:
        for _, task in self.pending[self.sent :]:
            task.cancel()

    def _start(self, sentence: str) -> None:
        # Only the first goes early: the sentences after it are made while it plays, and
        # each of them holds one of the `parallel` slots until its audio is whole.
        early = not self.pending and self.streaming_mode > 0
        self.pending.append((sentence, asyncio.create_task(self._speak(sentence, early))))

    async def _speak(self, sentence: str, early: bool) -> tuple[str | None, str | None]:
        async with self.slots:
            try:
                return await self.tts.speak(
                    self.caller, sentence, self.voice_id, self.streaming_mode, progressive=early
                ), None
            except PeerError as exc:
                return None, failure_text(exc)

    def _event(self, outcome: tuple[str | None, str | None]) -> dict[str, object]:
        url, error = outcome
        event: dict[str, object] = {
            "index": self.sent,
            "text": self.pending[self.sent][0],
            "audio_url": url,
        }
        if error:
            event["tts_error"] = error
            self.errors.append(error)
        if url:
            self.urls.append(url)
        self.sent += 1
        return event
