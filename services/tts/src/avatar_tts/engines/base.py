"""Speech engines behind one interface: `gpt_sovits` (GPT-SoVITS api_v2 on the GPU box) and
`local` (espeak-ng on this machine's CPU)."""

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from avatar_tts.voices import VoiceEntry


@dataclass(frozen=True)
class Synthesis:
    text: str
    voice: VoiceEntry
    text_lang: str
    prompt_lang: str | None  # None: the voice's own
    media_type: str
    streaming_mode: int


class SpeechEngine(ABC):
    @abstractmethod
    def speak(self, job: Synthesis) -> AsyncIterator[bytes]:
        """The encoded audio, in chunks as the engine produces them."""

    @abstractmethod
    def sound_parameters(self, job: Synthesis) -> dict[str, Any]:
        """Everything that changes the sound: the cache key is made from it."""
