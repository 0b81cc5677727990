"""The LLM failing hard: a server that accepts and never answers (504 within the timeout),
and one killed in the middle of a streamed reply (an `error` event, nothing recorded, chat
works again once it is back)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from avatar_chat.app import create_app
from avatar_devstack.ports import free_port, port_open
from tests.helpers import silent_server

from .helpers import FAST_TIMEOUTS, ask, chat_settings


async def test_an_llm_that_never_answers_is_504_within_the_timeout(
    app_client, redis_url, backend_name
):
    with silent_server() as hung:
        key = "ollama_base_url" if backend_name == "ollama" else "vllm_base_url"
        settings = chat_settings(
            redis_url, llm_service=backend_name, **{key: hung}, **FAST_TIMEOUTS
        )
        async with app_client(create_app(settings)) as chat:
            started = time.perf_counter()
            response = await chat.post("/api/chat", json=ask("hi"))
            elapsed = time.perf_counter() - started
    assert (response.status_code, response.json()["error"]["code"]) == (504, "llm_timeout")
    assert elapsed < 3  # the read timeout is 0.5 s (the model list, then no reply)


async def test_the_llm_killed_mid_stream_ends_it_with_an_error_and_comes_back(
    app_client, redis_url, redis
):
    port = free_port()
    argv = [
        sys.executable, "-m", "avatar_emulators", "ollama", "--port", str(port),
        "--tokens-per-second", "20",
    ]  # fmt: skip

    def start_llm() -> subprocess.Popen:
        process = subprocess.Popen(argv, start_new_session=True)
        deadline = time.monotonic() + 20
        while not port_open(port):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        return process

    llm = start_llm()
    try:
        settings = chat_settings(redis_url, ollama_base_url=f"http://127.0.0.1:{port}")
        async with app_client(create_app(settings)) as chat:
            body = ask("길게 말해줘", stream=True, tts_enabled=False)
            streaming = asyncio.create_task(chat.post("/api/chat", json=body))
            await asyncio.sleep(1.0)
            os.killpg(llm.pid, signal.SIGKILL)  # a crash: the connection simply ends
            llm.wait()
            broken = await asyncio.wait_for(streaming, timeout=10)
            stored = await redis.keys("chat:session*")
            llm = start_llm()
            again = await chat.post("/api/chat", json=ask("다시", tts_enabled=False))
    finally:
        os.killpg(llm.pid, signal.SIGKILL)
        llm.wait()
    events = [
        (kind.removeprefix("event: "), json.loads(data.removeprefix("data: ")))
        for kind, data, *_ in (event.split("\n") for event in broken.text.split("\n\n")[:-1])
    ]
    assert events[0][0] == "delta" and events[-1][0] == "error"
    assert events[-1][1]["code"] == "llm_error"
    assert stored == []  # the broken turn is not recorded
    assert again.status_code == 200  # and chat works again once the LLM is back
