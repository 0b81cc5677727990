"""Behaviour of the GPT-SoVITS api_v2 emulator as an HTTP client sees it."""

from __future__ import annotations

import io
import struct
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import soundfile

from avatar_emulators.gpt_sovits import GptSovitsConfig, create_app
from avatar_emulators.server import serve_in_thread

BASE = {
    "text_lang": "en",
    "ref_audio_path": "voices/mira.wav",
    "prompt_lang": "en",
    "prompt_text": "Hello there.",
}
CHUNK_DELAY_S = 0.05


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = GptSovitsConfig(chunk_delay_s=CHUNK_DELAY_S, stream_chunk_s=0.5)
    with serve_in_thread(create_app(config)) as base_url:
        yield base_url


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    with wave.open(io.BytesIO(data)) as wav:
        duration = wav.getnframes() / wav.getframerate()
        return wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), duration


async def tts(url: str, **fields: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post("/tts", json={**BASE, **fields})


async def test_wav_format_and_duration_follows_text(url: str) -> None:
    short = await tts(url, text="Hi there.")
    long = await tts(url, text="This sentence is a good deal longer than the first one was.")
    fast = await tts(
        url, text="This sentence is a good deal longer than the first one was.", speed_factor=2.0
    )

    assert short.headers["content-type"] == "audio/wav"
    rate, channels, width, short_s = wav_info(short.content)
    assert (rate, channels, width) == (32000, 1, 2)
    long_s = wav_info(long.content)[3]
    assert long_s > short_s
    assert wav_info(fast.content)[3] == pytest.approx(long_s / 2, abs=0.001)


async def test_get_with_query_params_matches_post(url: str) -> None:
    params = {**BASE, "text": "Same words either way.", "streaming_mode": "false"}
    async with httpx.AsyncClient(base_url=url) as client:
        got = await client.get("/tts", params=params)
    posted = await tts(url, text="Same words either way.")

    assert got.status_code == 200
    assert got.content == posted.content


async def test_ogg_and_raw(url: str) -> None:
    text = "Vorbis, please."
    ogg = await tts(url, text=text, media_type="ogg")
    raw = await tts(url, text=text, media_type="raw")
    wav = await tts(url, text=text)

    samples, rate = soundfile.read(io.BytesIO(ogg.content))
    assert ogg.headers["content-type"] == "audio/ogg"
    assert rate == 32000
    frames = wav_info(wav.content)[3] * 32000
    assert len(samples) == pytest.approx(frames, abs=1)
    assert len(raw.content) == round(frames) * 2
    assert raw.content == wav.content[44:]


async def test_streaming_wav_header_then_pcm_chunks(url: str) -> None:
    text = "A streamed sentence that lasts long enough to need several chunks."
    full = wav_info((await tts(url, text=text)).content)[3]
    pieces: list[tuple[float, bytes]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url) as client:
        body = {**BASE, "text": text, "streaming_mode": 2}
        async with client.stream("POST", "/tts", json=body) as response:
            assert response.headers["content-type"] == "audio/wav"
            assert "content-length" not in response.headers
            async for piece in response.aiter_raw():
                pieces.append((time.monotonic() - started, piece))

    data = b"".join(p for _, p in pieces)
    header, pcm = data[:44], data[44:]
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    channels, rate = struct.unpack("<HI", header[22:28])
    assert (channels, rate) == (1, 32000)
    assert header[36:40] == b"data" and struct.unpack("<I", header[40:44])[0] == 0
    assert len(pcm) == round(full * 32000) * 2
    # Chunks arrive over time, not as one body.
    assert len(pieces) >= 3
    assert pieces[-1][0] - pieces[0][0] >= CHUNK_DELAY_S * 2


async def test_streaming_mode_true_is_accepted(url: str) -> None:
    response = await tts(url, text="Old style flag.", streaming_mode=True, media_type="raw")

    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/raw"
    assert len(response.content) % 2 == 0 and len(response.content) > 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ref_audio_path": ""}, "ref_audio_path is required"),
        ({"text": ""}, "text is required"),
        ({"text_lang": "xx"}, "text_lang: xx is not supported in version v2"),
        ({"prompt_lang": "klingon"}, "prompt_lang: klingon is not supported in version v2"),
        ({"media_type": "mp3"}, "media_type: mp3 is not supported"),
        ({"text_split_method": "cut9"}, "text_split_method:cut9 is not supported"),
        (
            {"streaming_mode": 7},
            "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)",
        ),
    ],
)
async def test_api_v2_error_messages(url: str, fields: dict[str, Any], message: str) -> None:
    response = await tts(url, **{"text": "Hello.", **fields})

    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_a_failure_of_the_pipeline_is_api_v2s_tts_failed(url: str) -> None:
    # api_v2 checks no speed_factor: its pipeline fails on 0, answered like any exception.
    response = await tts(url, text="Hello.", speed_factor=0)

    assert response.status_code == 400
    assert response.json()["message"] == "tts failed" and response.json()["Exception"]


async def test_aac_is_adts_audio(url: str) -> None:
    response = await tts(url, text="Hello.", media_type="aac")

    assert response.status_code == 200 and response.headers["content-type"] == "audio/aac"
    assert response.content[:2] == b"\xff\xf1"  # an ADTS frame: MPEG-4 AAC, no CRC


async def test_requests_are_recorded(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        await client.delete("/_emulator/requests")
        await client.post("/tts", json={**BASE, "text": "Remember me.", "top_k": 5})
        await client.get("/tts", params={"text": "And me."})
        recorded = (await client.get("/_emulator/requests")).json()

    assert [r["method"] for r in recorded] == ["POST", "GET"]
    assert recorded[0]["params"]["text"] == "Remember me."
    assert recorded[0]["params"]["top_k"] == 5
    assert recorded[0]["status"] == 200
    assert recorded[1]["status"] == 400


async def test_fail_status_and_latency() -> None:
    app = create_app(GptSovitsConfig(fail_status=500, latency_s=0.15))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        started = time.monotonic()
        response = await client.post("/tts", json={**BASE, "text": "Fail."})
        elapsed = time.monotonic() - started

    assert response.status_code == 500
    assert response.json()["message"] == "tts failed"
    assert elapsed >= 0.15
    assert app.state.recorder.requests[0].status == 500


@pytest.mark.parametrize("pieces", [0, 2])
async def test_a_stream_sends_nothing_before_its_first_piece_and_can_break_off(
    pieces: int,
) -> None:
    # api_v2 writes the WAV header when the model yields its first audio: a model that fails
    # before that has sent its status, and no byte.
    config = GptSovitsConfig(stream_chunk_s=0.25, fail_after_chunks=pieces)
    text = "A streamed sentence that lasts long enough to need several chunks."
    received = b""
    with serve_in_thread(create_app(config)) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            body = {**BASE, "text": text, "streaming_mode": 3}
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("POST", "/tts", json=body) as response:
                    assert response.status_code == 200
                    async for piece in response.aiter_raw():
                        received += piece
    assert len(received) == (44 + pieces * 0.25 * 32000 * 2 if pieces else 0)
