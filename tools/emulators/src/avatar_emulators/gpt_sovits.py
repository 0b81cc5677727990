"""GPT-SoVITS ``api_v2.py`` emulator: for tests and `make demo` only, never for production.

Follows the public GPT-SoVITS ``api_v2.py`` API (RVC-Boss/GPT-SoVITS): ``POST /tts`` with a JSON
body and ``GET /tts`` with the same fields as query parameters (text, text_lang, ref_audio_path,
aux_ref_audio_paths, prompt_text, prompt_lang, top_k, top_p, temperature, text_split_method,
batch_size, speed_factor, streaming_mode, media_type, ...). Success is audio (HTTP 200); a bad
request is HTTP 400 ``{"message": "..."}`` with api_v2's texts and in api_v2's checking order.

Audio rule (fixed, so tests can assert on it): a quiet 220 Hz tone, 16-bit mono at
``GptSovitsConfig.sample_rate`` (32 kHz like the v2 models), lasting
``max(min_duration_s, len(text) * seconds_per_char) / speed_factor`` seconds. ``media_type``:
``wav`` (default), ``ogg`` (Vorbis), ``aac`` (ADTS, as api_v2's ffmpeg packs it), ``raw`` (bare
little-endian PCM). ``streaming_mode`` 1-3 (or ``true``) stream the audio
in ``stream_chunk_s`` pieces, each once it is "made" (``real_time_factor`` of its length, or
``chunk_delay_s``, after the one before); for wav, like api_v2, a WAV header that claims 0 frames
comes with the first piece (api_v2 writes it when the model yields its first audio), and every
piece is raw PCM. Deviations: malformed field values are 400 ``{"message"}`` here rather than
FastAPI's 422, reference audio files are never opened, and mode 1 streams fixed pieces too (api_v2
yields one piece per text fragment there).

Test hooks: ``app.state.recorder`` (a ``TtsRecorder``) and ``GET``/``DELETE /_emulator/requests``.
Failure injection: ``GptSovitsConfig.fail_status`` answers every valid request with that status
and api_v2's ``{"message": "tts failed", "Exception": ...}`` body (api_v2's own status for it
is 400, the same as its parameter checks': any exception of its pipeline, CUDA out of memory or
a reference clip it cannot read, is answered so); ``fail_after_chunks`` breaks
a stream off after that many pieces, as api_v2 does when the model fails mid-stream (its status
and first bytes are out: the connection just ends).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import wave
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import soundfile
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = [
    "GptSovitsConfig",
    "TtsRecord",
    "TtsRecorder",
    "audio_duration_s",
    "create_app",
    "synthesize",
]

# The languages api_v2 accepts for text_lang/prompt_lang with a v2 model.
V2_LANGUAGES = (
    "auto",
    "auto_yue",
    "en",
    "zh",
    "ja",
    "yue",
    "ko",
    "all_zh",
    "all_ja",
    "all_yue",
    "all_ko",
)
TEXT_SPLIT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
MEDIA_TYPES = ("wav", "raw", "ogg", "aac")
TONE_HZ = 220.0
TONE_AMPLITUDE = 0.1  # quiet, so a demo played through speakers is not unpleasant
FADE_S = 0.01  # fade in/out so chunk edges do not click


class TtsError(Exception):
    """A 400 answer in api_v2's shape: ``{"message": ...}``."""


@dataclass
class TtsRecord:
    """One /tts request as received (before validation) and the status it was answered with."""

    method: str
    params: dict[str, Any]
    status: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TtsRecorder:
    """Keeps every /tts request the emulator received, in arrival order."""

    requests: list[TtsRecord] = field(default_factory=list)

    def record(self, request: TtsRecord) -> None:
        self.requests.append(request)

    def clear(self) -> None:
        self.requests.clear()


@dataclass
class GptSovitsConfig:
    """Settings of the GPT-SoVITS emulator."""

    sample_rate: int = 32000
    seconds_per_char: float = 0.06
    min_duration_s: float = 0.3
    latency_s: float = 0.0  # delay before the first byte of audio
    stream_chunk_s: float = 0.25  # audio length of one streamed chunk
    chunk_delay_s: float = 0.0  # delay between streamed chunks
    # Seconds of work per second of audio (a GPU server is around 0.1-0.5): the whole file
    # waits this share of its duration; a stream waits it per chunk.
    real_time_factor: float = 0.0
    version: str = "v2"
    languages: tuple[str, ...] = V2_LANGUAGES
    fail_status: int | None = None
    fail_after_chunks: int | None = None  # a stream breaks off after this many pieces
    recorder: TtsRecorder = field(default_factory=TtsRecorder)


def _to_str(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TtsError(f"{name} must be a string")


def _to_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise TtsError(f"{name} must be an integer") from None


def _to_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TtsError(f"{name} must be a number") from None


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise TtsError(f"{name} must be a boolean")


def _to_str_list(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TtsError(f"{name} must be a list of strings")


def _to_streaming_mode(name: str, value: Any) -> int:
    # api_v2 accepts a bool (old API) or an int; True means mode 1, False mode 0.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    return _to_int(name, value)


Converter = Callable[[str, Any], Any]

# api_v2's request fields with their converter and default value.
FIELDS: dict[str, tuple[Converter, Any]] = {
    "text": (_to_str, None),
    "text_lang": (_to_str, None),
    "ref_audio_path": (_to_str, None),
    "aux_ref_audio_paths": (_to_str_list, None),
    "prompt_lang": (_to_str, None),
    "prompt_text": (_to_str, ""),
    "top_k": (_to_int, 15),
    "top_p": (_to_float, 1.0),
    "temperature": (_to_float, 1.0),
    "text_split_method": (_to_str, "cut5"),
    "batch_size": (_to_int, 1),
    "batch_threshold": (_to_float, 0.75),
    "split_bucket": (_to_bool, True),
    "speed_factor": (_to_float, 1.0),
    "fragment_interval": (_to_float, 0.3),
    "seed": (_to_int, -1),
    "media_type": (_to_str, "wav"),
    "streaming_mode": (_to_streaming_mode, 0),
    "parallel_infer": (_to_bool, True),
    "repetition_penalty": (_to_float, 1.35),
    "sample_steps": (_to_int, 32),
    "super_sampling": (_to_bool, False),
    "overlap_length": (_to_int, 2),
    "min_chunk_length": (_to_int, 16),
}


def parse_tts_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Apply defaults and types to the known fields (unknown ones are ignored like api_v2)."""
    params = {}
    for name, (convert, default) in FIELDS.items():
        value = raw.get(name)
        params[name] = default if value is None else convert(name, value)
    return params


def _check_language(name: str, value: str | None, config: GptSovitsConfig) -> None:
    if not value:
        raise TtsError(f"{name} is required")
    if value.lower() not in config.languages:
        raise TtsError(f"{name}: {value} is not supported in version {config.version}")


def check_tts_params(params: dict[str, Any], config: GptSovitsConfig) -> None:
    """api_v2's checks, in its order; raises TtsError with the same messages."""
    if not params["ref_audio_path"]:
        raise TtsError("ref_audio_path is required")
    if not params["text"]:
        raise TtsError("text is required")
    _check_language("text_lang", params["text_lang"], config)
    _check_language("prompt_lang", params["prompt_lang"], config)
    media_type = params["media_type"]
    if media_type not in MEDIA_TYPES:
        raise TtsError(f"media_type: {media_type} is not supported")
    if params["text_split_method"] not in TEXT_SPLIT_METHODS:
        raise TtsError(f"text_split_method:{params['text_split_method']} is not supported")
    if params["streaming_mode"] not in (0, 1, 2, 3):
        raise TtsError("the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)")


def audio_duration_s(text: str, speed_factor: float, config: GptSovitsConfig) -> float:
    """The audio rule: a fixed time per character (with a floor), divided by the speed."""
    return max(config.min_duration_s, len(text) * config.seconds_per_char) / speed_factor


def synthesize(text: str, speed_factor: float, config: GptSovitsConfig) -> np.ndarray:
    """16-bit mono PCM of a quiet tone whose length follows `audio_duration_s`."""
    frames = round(audio_duration_s(text, speed_factor, config) * config.sample_rate)
    t = np.arange(frames) / config.sample_rate
    signal = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    fade = min(round(FADE_S * config.sample_rate), frames // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    return (signal * 32767).astype("<i2")


def encode_wav(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encode_ogg(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sample_rate, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def encode_aac(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def encode(pcm: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    if media_type == "wav":
        return encode_wav(pcm, sample_rate)
    if media_type == "ogg":
        return encode_ogg(pcm, sample_rate)
    if media_type == "aac":
        return encode_aac(pcm, sample_rate)
    return pcm.tobytes()


async def _stream_audio(
    pcm: np.ndarray, media_type: str, config: GptSovitsConfig
) -> AsyncIterator[bytes]:
    """api_v2's streaming: each chunk once it is made; for wav a 0-frame header with the
    first, and every chunk as raw PCM."""
    header = media_type == "wav"
    if header:
        media_type = "raw"
    step = max(1, round(config.stream_chunk_s * config.sample_rate))
    pause = max(config.chunk_delay_s, config.real_time_factor * config.stream_chunk_s)
    for index, start in enumerate(range(0, len(pcm), step)):
        if pause > 0 and (index or config.real_time_factor):
            await asyncio.sleep(pause)
        if config.fail_after_chunks is not None and index >= config.fail_after_chunks:
            raise RuntimeError("emulator: injected failure in the middle of the stream")
        if header and index == 0:
            # The total length is unknown when streaming starts, so the header claims 0 frames.
            yield encode_wav(pcm[:0], config.sample_rate)
        # ogg chunks are each a complete file, as api_v2 packs every chunk on its own.
        yield encode(pcm[start : start + step], config.sample_rate, media_type)


async def _tts_response(params: dict[str, Any], config: GptSovitsConfig) -> Response:
    pcm = synthesize(params["text"], params["speed_factor"], config)
    media_type = params["media_type"]
    if params["streaming_mode"]:
        return StreamingResponse(
            _stream_audio(pcm, media_type, config), media_type=f"audio/{media_type}"
        )
    if config.real_time_factor > 0:
        await asyncio.sleep(config.real_time_factor * len(pcm) / config.sample_rate)
    return Response(encode(pcm, config.sample_rate, media_type), media_type=f"audio/{media_type}")


def create_app(config: GptSovitsConfig | None = None) -> FastAPI:
    """Build the GPT-SoVITS api_v2 emulator; `app.state.recorder` holds the requests received."""
    config = config or GptSovitsConfig()
    app = FastAPI(title="GPT-SoVITS api_v2 emulator")
    app.state.config = config
    app.state.recorder = config.recorder

    async def handle(method: str, raw: dict[str, Any]) -> Response:
        response = await _handle_tts(raw, config)
        config.recorder.record(TtsRecord(method, raw, response.status_code))
        return response

    @app.get("/tts")
    async def tts_get(request: Request) -> Response:
        raw: dict[str, Any] = dict(request.query_params)
        if "aux_ref_audio_paths" in request.query_params:
            raw["aux_ref_audio_paths"] = request.query_params.getlist("aux_ref_audio_paths")
        return await handle("GET", raw)

    @app.post("/tts")
    async def tts_post(request: Request) -> Response:
        try:
            raw = json.loads(await request.body())
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            return JSONResponse({"message": "request body must be a JSON object"}, 400)
        return await handle("POST", raw)

    @app.get("/_emulator/requests")
    async def list_requests() -> list[dict[str, Any]]:
        return [r.to_dict() for r in config.recorder.requests]

    @app.delete("/_emulator/requests")
    async def clear_requests() -> Response:
        config.recorder.clear()
        return Response(status_code=204)

    return app


async def _handle_tts(raw: dict[str, Any], config: GptSovitsConfig) -> Response:
    try:
        params = parse_tts_params(raw)
        check_tts_params(params, config)
    except TtsError as exc:
        return JSONResponse({"message": str(exc)}, status_code=400)
    if config.latency_s > 0:
        await asyncio.sleep(config.latency_s)
    if config.fail_status is not None:
        return _pipeline_failed("emulator: injected failure (fail_status)", config.fail_status)
    if params["speed_factor"] <= 0:  # api_v2 checks no speed: its pipeline fails on it
        return _pipeline_failed(f"speed_factor {params['speed_factor']} is not a speed", 400)
    return await _tts_response(params, config)


def _pipeline_failed(exception: str, status: int) -> Response:
    """api_v2's answer to any exception of its pipeline (its `tts_handle`): 400 with the
    exception's text."""
    return JSONResponse({"message": "tts failed", "Exception": exception}, status_code=status)
