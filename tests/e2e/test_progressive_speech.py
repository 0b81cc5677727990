"""Speech played while it is made, through the gateway: a `progressive` answer's audio_url
streams the audio as GPT-SoVITS (the emulator, a piece every 0.1 s) makes it, unbuffered by
Traefik, and a real browser's <audio> plays it through."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from avatar_devstack.stack import Stack
from avatar_emulators.gpt_sovits import GptSovitsConfig, audio_duration_s
from tests.helpers import own_stack

# 3 s of audio, made in about 1.2 s (12 pieces of 0.25 s, one every 0.1 s).
TEXT = "천천히 만들어지는 목소리를 만들어지는 동안 들어 봅니다. 끝까지 들리나요? 네, 들립니다."
PROGRESSIVE = {"text": TEXT, "streaming_mode": 2, "progressive": True}


@pytest.fixture(scope="module")
def slow_speech() -> Iterator[Stack]:
    with own_stack("speech", {}, emulator_args={"gpt-sovits": ["--chunk-delay", "0.1"]}) as stack:
        yield stack


async def test_the_audio_streams_through_the_gateway_while_it_is_made(slow_speech):
    async with httpx.AsyncClient(base_url=slow_speech.gateway_url, trust_env=False) as http:
        data = (await http.post("/api/tts", json=PROGRESSIVE)).json()["data"]
        assert data["complete"] is False
        final = Path(slow_speech.env["ASSETS_DIR"]) / data["audio_url"].removeprefix(
            "/mnt/user_assets/"
        )
        streamed = b""
        async with http.stream("GET", data["audio_url"]) as response:
            assert response.headers["cache-control"] == "no-store"
            async for chunk in response.aiter_bytes():
                if not streamed:
                    assert not final.exists()  # its first bytes came before the rest was made
                streamed += chunk
        whole = await http.get(data["audio_url"])
    assert "immutable" in whole.headers["cache-control"]
    assert streamed[44:] == whole.content[44:] and len(streamed) > 44


PLAY = """
const [body, done] = arguments;
(async () => {
  const answer = await fetch("/api/tts", {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const data = (await answer.json()).data;
  const audio = new Audio(data.audio_url);
  const events = [];
  for (const name of ["playing", "ended", "error"]) {
    audio.addEventListener(name, () => events.push(name));
  }
  const over = new Promise((end) => {
    audio.addEventListener("ended", end);
    audio.addEventListener("error", end);
  });
  await audio.play();
  await over;
  done({complete: data.complete, events, error: audio.error && audio.error.code,
        played: audio.played.length ? audio.played.end(0) : 0});
})().catch((failure) => done({failure: String(failure)}));
"""


def test_a_browser_plays_the_audio_through_while_it_is_made(slow_speech, browser):
    # At the public address: the services take writes from that origin's pages only.
    browser.get(f"{slow_speech.env['PUBLIC_BASE_URL']}/playground/")
    browser.set_script_timeout(30)
    other_words = {**PROGRESSIVE, "text": f"브라우저에서 {TEXT}"}  # not the cached speech
    result = browser.execute_async_script(PLAY, other_words)
    assert "failure" not in result, result
    assert result["complete"] is False and result["error"] is None
    assert result["events"][0] == "playing" and result["events"][-1] == "ended"
    assert "error" not in result["events"]
    # All of it was heard, not just what was there when it started.
    heard = audio_duration_s(other_words["text"], 1.0, GptSovitsConfig())
    assert result["played"] == pytest.approx(heard, abs=0.1)
