"""A streamed reply is read however the network cuts it: a line (even a Korean character)
split across reads, several lines in one read, bytes that are not UTF-8. A scripted Ollama
server writes chosen bytes, read by read, over a real socket."""

import asyncio
import json
import time

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from avatar_chat.app import create_app
from avatar_emulators.server import serve_in_thread

from .helpers import ask, chat_settings, read_events

MODEL = "gemma-3-27b-it"


def line(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    body = {"model": MODEL, "message": message, "done": False}
    return json.dumps(body, ensure_ascii=False).encode() + b"\n"


DONE = json.dumps({"model": MODEL, "done": True, "prompt_eval_count": 9, "eval_count": 3})
DONE_LINE = DONE.encode() + b"\n"


def scripted_ollama(reads: list[bytes], gap_s: float = 0.05) -> FastAPI:
    """Ollama's chat API answering every streamed chat with `reads`, each written apart
    (`gap_s` after the one before)."""
    app = FastAPI()

    @app.get("/api/tags")
    async def tags() -> dict:
        return {"models": [{"name": f"{MODEL}:latest"}]}

    @app.post("/api/chat")
    async def chat() -> StreamingResponse:
        async def written():
            for data in reads:
                yield data
                await asyncio.sleep(gap_s)  # the next write is a read of its own

        return StreamingResponse(written(), media_type="application/x-ndjson")

    return app


async def streamed(
    app_client, redis_url, reads: list[bytes], gap_s: float = 0.05, **timeouts: float
) -> list[tuple[str, dict]]:
    with serve_in_thread(scripted_ollama(reads, gap_s)) as url:
        settings = chat_settings(redis_url, llm_service="ollama", ollama_base_url=url, **timeouts)
        async with app_client(create_app(settings)) as chat:
            body = ask("안녕", stream=True, tts_enabled=False)
            async with chat.stream("POST", "/api/chat", json=body) as response:
                assert response.status_code == 200
                return await read_events(response)


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(data["content"] for kind, data in events if kind == "delta")


async def test_a_line_cut_anywhere_is_read_whole(app_client, redis_url):
    whole = line("안녕") + line(" 하세요") + DONE_LINE
    cut = whole.index("녕".encode()) + 1  # inside the character's three bytes
    events = await streamed(app_client, redis_url, [whole[:cut], whole[cut:]])
    assert text_of(events) == "안녕 하세요"
    assert events[-1][0] == "done" and events[-1][1]["content"] == "안녕 하세요"


async def test_text_that_came_with_an_error_reaches_the_client_before_it(app_client, redis_url):
    together = line("먼저 온 말") + b'{"error": "model crashed"}\n'
    events = await streamed(app_client, redis_url, [line("처음"), together])
    assert text_of(events) == "처음먼저 온 말"
    assert events[-1] == ("error", events[-1][1]) and events[-1][1]["code"] == "llm_error"


async def test_what_follows_the_end_of_the_answer_is_not_part_of_it(app_client, redis_url):
    events = await streamed(app_client, redis_url, [line("끝"), DONE_LINE + b"garbage\n"])
    assert events[-1][0] == "done"
    assert events[-1][1]["content"] == "끝"
    assert events[-1][1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3}


async def test_bytes_that_are_not_utf8_become_one_replacement_character(app_client, redis_url):
    broken = line("가나").replace("나".encode(), "나".encode()[:2])  # a character cut short
    events = await streamed(app_client, redis_url, [broken, DONE_LINE])
    assert events[-1][0] == "done"
    assert events[-1][1]["content"] == "가\ufffd"


async def test_a_stream_that_stalls_past_the_total_timeout_ends_with_a_timeout_event(
    app_client, redis_url
):
    """LLM_TOTAL_TIMEOUT_S bounds the whole stream, however long the read timeout lets one
    wait for the next bytes: here the rest comes 8 s after the first words, the total is 1 s."""
    reads = [line("처음"), line(" 늦은 말") + DONE_LINE]
    timeouts = {"llm_total_timeout_s": 1.0, "llm_read_timeout_s": 30.0}
    started = time.perf_counter()
    events = await streamed(app_client, redis_url, reads, gap_s=8, **timeouts)
    elapsed = time.perf_counter() - started
    assert text_of(events) == "처음"
    assert events[-1][0] == "error" and events[-1][1]["code"] == "llm_timeout"
    assert elapsed < 5  # well under the 8 s of the rest
