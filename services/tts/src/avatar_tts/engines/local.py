"""The `local` engine: espeak-ng on this machine's CPU, no GPU and no model download (the
library and its language data come in the espeakng-loader wheel), so speech works out of
the box, Korean included. It makes WAV, and OGG Vorbis through libsndfile."""

import asyncio
import ctypes
import io
import threading
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import espeakng_loader
import numpy as np
import soundfile

from avatar_tts.engines.base import SpeechEngine, Synthesis
from avatar_tts.errors import TtsError, TtsRejected

AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when the text is spoken
POS_CHARACTER, ESPEAK_CHARS_UTF8 = 1, 1
ESPEAK_RATE, ESPEAK_PITCH = 1, 3
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Espeak:
    """libespeak-ng keeps global state: one instance per process, one synthesis at a time."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_dir = Path(espeakng_loader.get_data_path())
        self.sample_rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_dir.parent).encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("espeak-ng could not start (its data files are missing)")
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept: C holds a pointer to it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, samples: Any, count: int, _events: Any) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0: go on

    def pcm(self, text: str, voice: str, rate: int, pitch: int) -> bytes:
        """16-bit mono PCM at `sample_rate`."""
        encoded = text.encode()
        with self._lock:
            self._chunks = []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise TtsRejected(f"The local engine has no voice '{voice}'.")
            self._lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
            self._lib.espeak_SetParameter(ESPEAK_PITCH, pitch, 0)
            status = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
            )
            if status != 0:
                raise TtsError(f"The local engine failed (espeak-ng status {status}).")
            return b"".join(self._chunks)


_espeak: Espeak | None = None
_espeak_start = threading.Lock()


def espeak() -> Espeak:
    """The process's one espeak-ng, started on first use (most runs never need it), shared by
    every engine and app of the process: the library's state is global, and two instances
    synthesizing at once (each behind its own lock) crash the process in espeak_Synth."""
    global _espeak
    with _espeak_start:
        if _espeak is None:
            _espeak = Espeak()
        return _espeak


class LocalEngine(SpeechEngine):
    def sound_parameters(self, job: Synthesis) -> dict[str, Any]:
        local = job.voice.local
        return {
            "engine": "local",
            "voice": local.voice if local and local.voice else job.voice.language,
            "rate": local.rate if local else 175,
            "pitch": local.pitch if local else 50,
            "text": job.text,
            "media_type": job.media_type,
        }

    async def speak(self, job: Synthesis) -> AsyncIterator[bytes]:
        if job.media_type not in ("wav", "ogg"):
            raise TtsRejected("The local engine makes wav or ogg audio only.")
        params = self.sound_parameters(job)
        audio = await asyncio.to_thread(self._encode, params)
        yield audio

    def _encode(self, params: dict[str, Any]) -> bytes:
        engine = espeak()
        pcm = engine.pcm(params["text"], params["voice"], params["rate"], params["pitch"])
        rate, out = engine.sample_rate, io.BytesIO()
        if params["media_type"] == "ogg":
            samples = np.frombuffer(pcm, dtype=np.int16)
            soundfile.write(out, samples, rate, format="OGG", subtype="VORBIS")
        else:
            with wave.open(out, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                wav.writeframes(pcm)
        return out.getvalue()
