"""GPT-SoVITS api_v2: `POST {TTS_BASE_URL}{TTS_API_PATH}`, the audio yielded as it streams in."""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from avatar_shared.health import Status, UpstreamCheck, probe_url
from avatar_tts.engines.base import SpeechEngine, Synthesis
from avatar_tts.errors import TtsError, TtsRejected, TtsTimeout, TtsUnavailable
from avatar_tts.settings import TtsSettings

log = logging.getLogger("avatar.tts")


class GptSovitsEngine(SpeechEngine):
    def __init__(self, http: httpx.AsyncClient, settings: TtsSettings) -> None:
        self.http = http
        self.url = f"{settings.tts_base_url.rstrip('/')}{settings.tts_api_path}"

    def sound_parameters(self, job: Synthesis) -> dict[str, Any]:
        if job.voice.gpt_sovits is None:
            raise TtsError(f"Voice '{job.voice.id}' has no GPT-SoVITS settings.")
        voice = job.voice.gpt_sovits.model_dump(exclude_none=True)
        voice["prompt_lang"] = job.prompt_lang or voice["prompt_lang"]
        return {
            **voice,
            "text": job.text,
            "text_lang": job.text_lang,
            "media_type": job.media_type,
            "streaming_mode": job.streaming_mode,
        }

    async def speak(self, job: Synthesis) -> AsyncIterator[bytes]:
        payload = self.sound_parameters(job)
        try:
            async with self.http.stream("POST", self.url, json=payload) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _failure(response)
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.ConnectError as exc:
            raise TtsUnavailable() from exc
        except httpx.TimeoutException as exc:
            raise TtsTimeout() from exc
        except httpx.TransportError as exc:
            raise TtsError("The speech server broke off its answer.") from exc


# api_v2's answer to any failure of its pipeline (CUDA out of memory, a reference clip it
# cannot read...), a 400 like its parameter checks' but with the error in "Exception".
PIPELINE_FAILED = "tts failed"


def _failure(response: httpx.Response) -> Exception:
    """What the server said goes to the log, never to the client: it can name paths and
    models of the GPU box."""
    try:
        body = json.loads(response.content)
        message, exception = str(body.get("message", "")), str(body.get("Exception", ""))
    except (ValueError, AttributeError):
        message, exception = response.text[:200], ""
    log.warning(
        "speech server answered %d: %s%s",
        response.status_code,
        message[:500],
        f": {exception[:1000]}" if exception else "",
    )
    if response.status_code == 400 and message != PIPELINE_FAILED:  # its parameter checks
        return TtsRejected(
            "The speech server cannot make speech with these parameters (text_lang, "
            "prompt_lang, media_type, streaming_mode)."
        )
    return TtsError(f"The speech server answered {response.status_code}.")


def gpt_sovits_check(settings: TtsSettings) -> UpstreamCheck:
    """For /upstreamz. api_v2 has no health endpoint: any answer from /tts (400 for a bare GET)
    means it is up."""

    async def check(client: httpx.AsyncClient) -> Status:
        return await probe_url(client, f"{settings.tts_base_url}{settings.tts_api_path}")

    return check
