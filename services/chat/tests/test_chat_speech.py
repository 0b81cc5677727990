"""Speech in chat: the chat service asks the real tts service (over HTTP), which speaks
through the GPT-SoVITS emulator."""

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators import gpt_sovits
from avatar_emulators.server import serve_in_thread
from avatar_tts.app import create_app as tts_app
from avatar_tts.settings import TtsSettings

from .helpers import Backend, ask, emulated_llm, no_turn_in_flight, read_events


@pytest.fixture
def tts_url(redis_url, tmp_path):
    with serve_in_thread(gpt_sovits.create_app()) as sovits:
        settings = TtsSettings(redis_url=redis_url, assets_dir=str(tmp_path), tts_base_url=sovits)
        with serve_in_thread(tts_app(settings), lifespan="on") as url:
            yield url


@pytest.fixture
async def chat(app_client, redis_url, backend, tts_url) -> AsyncIterator[httpx.AsyncClient]:
    settings = ChatSettings(redis_url=redis_url, tts_url=tts_url, **backend.settings)
    async with app_client(create_app(settings)) as client:
        yield client


@pytest.fixture
async def tts(tts_url) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tts_url, trust_env=False) as client:
        yield client


def same_browser(chat: httpx.AsyncClient) -> dict[str, str]:
    """The anonymous cookie the chat service gave this client, for its calls to tts."""
    return {"Cookie": f"anon_id={chat.cookies['anon_id']}"}


async def test_realtime_speech_comes_with_the_reply(chat, tts):
    data = (await chat.post("/api/chat", json=ask("안녕", tts_mode="realtime"))).json()["data"]
    owner = chat.cookies["anon_id"].split(".")[0]
    assert data["audio_url"].startswith(f"/mnt/user_assets/{owner}/audio/")
    assert data["tts_error"] is None
    audio = await tts.get(data["audio_url"], headers=same_browser(chat))
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    # Another browser (no cookie: a fresh anonymous id) is not served it.
    assert (await tts.get(data["audio_url"])).status_code == 404


@pytest.mark.parametrize("extra", [{"tts_mode": "on_click"}, {"tts_enabled": False}])
async def test_no_speech_when_not_asked(chat, extra):
    data = (await chat.post("/api/chat", json=ask("안녕", **extra))).json()["data"]
    assert data["audio_url"] is None and data["tts_error"] is None


async def test_delayed_speech_appears_at_its_url_later(chat, tts):
    body = ask("안녕", tts_mode="delayed", tts_delay_ms=500)
    data = (await chat.post("/api/chat", json=body)).json()["data"]
    assert data["audio_url"].endswith(".wav")
    mine = same_browser(chat)
    assert (await tts.get(data["audio_url"], headers=mine)).status_code == 404  # not yet
    for _ in range(40):
        await asyncio.sleep(0.1)
        if (await tts.get(data["audio_url"], headers=mine)).status_code == 200:
            break
    assert (await tts.get(data["audio_url"], headers=mine)).content[:4] == b"RIFF"


async def test_a_speech_failure_never_fails_the_chat(app_client, redis_url, backend):
    settings = ChatSettings(
        redis_url=redis_url, tts_url=f"http://127.0.0.1:{free_port()}", **backend.settings
    )
    async with app_client(create_app(settings)) as chat:
        response = await chat.post("/api/chat", json=ask("안녕"))
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["content"] and data["audio_url"] is None
    assert "unreachable" in data["tts_error"]


async def test_a_streamed_reply_is_spoken_sentence_by_sentence(chat, tts):
    body = ask("이야기 해줘", stream=True, tts_mode="realtime")
    async with chat.stream("POST", "/api/chat", json=body) as response:
        events = await read_events(response)
    audio = [data for kind, data in events if kind == "audio"]
    done = events[-1][1]
    assert events[-1][0] == "done" and len(audio) >= 3
    assert [a["index"] for a in audio] == list(range(len(audio)))
    assert " ".join(a["text"] for a in audio).split() == done["content"].split()
    assert done["audio_urls"] == [a["audio_url"] for a in audio]
    assert done["audio_url"] is None and done["tts_error"] is None
    for event in audio:
        assert (await tts.get(event["audio_url"], headers=same_browser(chat))).content[
            :4
        ] == b"RIFF"


async def test_sentence_speech_failures_do_not_break_the_stream_and_done_says_why(
    app_client, redis_url, backend
):
    """Each sentence that could not be spoken says why, the reply goes on, and a client
    reading `done` alone tells "speech failed" from "no speech asked", as with a reply that
    is not streamed."""
    settings = ChatSettings(
        redis_url=redis_url, tts_url=f"http://127.0.0.1:{free_port()}", **backend.settings
    )
    async with app_client(create_app(settings)) as chat:
        body = ask("이야기 해줘", stream=True, tts_mode="realtime")
        async with chat.stream("POST", "/api/chat", json=body) as response:
            events = await read_events(response)
    audio = [data for kind, data in events if kind == "audio"]
    assert all(a["audio_url"] is None and "unreachable" in a["tts_error"] for a in audio)
    kind, done = events[-1]
    assert kind == "done" and audio
    assert done["audio_urls"] == [] and done["audio_url"] is None
    assert "unreachable" in done["tts_error"]


async def test_with_streamed_speech_the_first_sentence_plays_while_it_is_made(
    redis, redis_url, backend, tmp_path
):
    # GPT-SoVITS streams (tts_streaming_mode 2): the first sentence's audio event comes once
    # its speech has begun, and its audio_url serves the audio as it is made.
    pace = gpt_sovits.GptSovitsConfig(chunk_delay_s=0.1)
    with (
        serve_in_thread(gpt_sovits.create_app(pace)) as sovits,
        serve_in_thread(
            tts_app(
                TtsSettings(redis_url=redis_url, assets_dir=str(tmp_path), tts_base_url=sovits)
            ),
            lifespan="on",
        ) as tts_url,
        serve_in_thread(
            create_app(ChatSettings(redis_url=redis_url, tts_url=tts_url, **backend.settings)),
            lifespan="on",
        ) as chat_url,
    ):
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:  # one browser
            body = ask("이야기 해줘", stream=True, tts_mode="realtime", tts_streaming_mode=2)
            async with http.stream("POST", f"{chat_url}/api/chat", json=body) as reply:
                first = await _first_audio_event(reply)
            async with http.stream("GET", f"{tts_url}{first['audio_url']}") as audio:
                being_made = audio.headers["cache-control"] == "no-store"
                streamed = await audio.aread()
            whole = await http.get(f"{tts_url}{first['audio_url']}")
    assert first["index"] == 0 and first.get("tts_error") is None
    assert being_made and streamed[:4] == b"RIFF"
    assert "immutable" in whole.headers["cache-control"]
    assert streamed[44:] == whole.content[44:] and len(whole.content) > 44


async def _first_audio_event(response: httpx.Response) -> dict:
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif kind == "audio" and line.startswith("data: "):
            event: dict = json.loads(line.removeprefix("data: "))
            return event
    raise AssertionError("no audio event")


def _tts_held(release: threading.Event, most_s: float):
    """A tts service whose every answer waits until `release` is set (`most_s` at most)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/api/tts")
    async def speak() -> dict:
        await asyncio.to_thread(release.wait, most_s)
        return {"success": True, "data": {"audio_url": "/mnt/user_assets/x/audio/y.wav"}}

    return app


async def _first_delta(lines) -> None:
    async for line in lines:
        if line.startswith("data: "):
            return


def speaking(redis_url: str, backend: Backend, tts: str, **extra: Any) -> ChatSettings:
    """Chat speaking through `tts`, its LLM `backend`."""
    return ChatSettings(
        redis_url=redis_url,
        tts_url=tts,
        chat_rate_per_min=10_000,
        **{"characters_url": f"http://127.0.0.1:{free_port()}", **extra},
        **backend.settings,
    )


async def test_a_streamed_reply_gives_its_llm_slot_back_while_its_speech_is_made(redis_url):
    """The model has written the reply, its last sentences are still being spoken: the one
    LLM slot is free, and another user's turn is answered meanwhile (not 503 llm_busy)."""
    release = threading.Event()
    with (
        emulated_llm("ollama") as backend,
        serve_in_thread(_tts_held(release, 30.0)) as tts,
    ):
        settings = speaking(
            redis_url,
            backend,
            tts,
            llm_max_in_flight=1,
            llm_queue_wait_s=5.0,  # ample for the emulator to finish writing
        )
        with serve_in_thread(create_app(settings), lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as chat:
                body = ask("이야기 해줘", stream=True, tts_mode="realtime")
                async with chat.stream("POST", "/api/chat", json=body) as streaming:
                    lines = streaming.aiter_lines()
                    await _first_delta(lines)  # under way; its speech waits for `release`
                    try:
                        other = await chat.post("/api/chat", json=ask("hi", tts_enabled=False))
                    finally:
                        release.set()
                    rest = [line async for line in lines]
    assert other.status_code == 200, other.json()
    kinds = [line for line in rest if line.startswith("event: ")]
    assert "event: audio" in kinds and kinds[-1] == "event: done"
    assert kinds.index("event: audio") > max(
        (i for i, k in enumerate(kinds) if k == "event: delta"), default=-1
    )


async def test_a_reply_written_whole_is_kept_whole_when_the_user_leaves_during_its_speech(
    redis_url, redis, characters_url
):
    """The model has written the whole reply; its last sentences are still being spoken when
    the user closes the stream: the reply is saved complete (not marked interrupted), with
    its token counts."""
    release = threading.Event()
    with (
        emulated_llm("ollama") as backend,
        serve_in_thread(_tts_held(release, 30.0)) as tts,
    ):
        settings = speaking(
            redis_url,
            backend,
            tts,
            characters_url=characters_url,  # asked for the caller's default persona at start
            llm_max_in_flight=1,
            llm_queue_wait_s=5.0,
        )
        with serve_in_thread(create_app(settings), lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as chat:
                created = await chat.post("/api/chat/sessions", json={"persona": "A bard."})
                sid = created.json()["data"]["session_id"]
                body = {"session_id": sid, "message": "sing", "stream": True,
                        "tts_mode": "realtime"}  # fmt: skip
                try:
                    async with chat.stream("POST", "/api/chat", json=body) as streaming:
                        await _first_delta(streaming.aiter_lines())
                        # Answered once the one LLM slot is free: the reply is written.
                        other = await chat.post("/api/chat", json=ask("hi", tts_enabled=False))
                        assert other.status_code == 200, other.text
                finally:  # the user has left during its speech
                    release.set()
                await no_turn_in_flight(redis)
                history = (await chat.get(f"/api/chat/sessions/{sid}")).json()["data"]
    said, reply = history["messages"]
    assert said["content"] == "sing"
    assert reply["interrupted"] is False and reply["content"]
    assert history["usage"]["completion_tokens"] > 0


async def test_a_long_spoken_reply_keeps_its_conversation_busy_until_it_is_recorded(
    redis_url, characters_url
):
    """A server conversation's streamed reply whose speech outlasts the turn's lease (5 s
    here): its hold and lease are renewed while it speaks, so a second turn meanwhile is 409
    conversation_busy, and the history keeps the turns in the order they were said."""
    release = threading.Event()
    with (
        emulated_llm("ollama", reply_words=400) as backend,
        serve_in_thread(_tts_held(release, 0.5)) as tts,
    ):
        settings = speaking(
            redis_url,
            backend,
            tts,
            characters_url=characters_url,
            tts_timeout_s=1.0,
            summary_timeout_s=0.5,
            llm_queue_wait_s=0.5,
            llm_total_timeout_s=2.0,
            stream_write_timeout_s=1.0,  # lease: 5 s
        )
        with serve_in_thread(create_app(settings), lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as chat:
                created = await chat.post("/api/chat/sessions", json={"persona": "A bard."})
                assert created.status_code == 201, created.text
                sid = created.json()["data"]["session_id"]
                body = {"session_id": sid, "message": "sing", "stream": True,
                        "tts_mode": "realtime", "max_tokens": 1000}  # fmt: skip
                later = {"session_id": sid, "message": "later", "tts_enabled": False}
                async with chat.stream("POST", "/api/chat", json=body) as streaming:
                    lines = streaming.aiter_lines()
                    await _first_delta(lines)
                    await asyncio.sleep(6)  # past the lease; its speech still being made
                    during = await chat.post("/api/chat", json=later)
                    rest = [line async for line in lines]
                after = await chat.post("/api/chat", json=later)
                history = (await chat.get(f"/api/chat/sessions/{sid}")).json()["data"]
    audio = sum(1 for line in rest if line == "event: audio")
    assert audio > 24 and rest[-3] == "event: done", rest[-3:]  # spoke for over 6 s
    assert during.status_code == 409, during.json()
    assert during.json()["error"]["code"] == "conversation_busy"
    assert after.status_code == 200, after.json()
    said = [m["content"] for m in history["messages"] if m["role"] == "user"]
    assert said == ["sing", "later"]
