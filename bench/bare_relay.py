"""The least a Python relay of a streamed reply costs: a bare ASGI app (no framework, no
middleware, no admission, no record) that asks Ollama for a streamed chat and sends each
read's text on as one SSE `delta` event, with the same server (uvicorn, uvloop, httptools),
HTTP client (aiohttp) and JSON library (orjson) as the chat service. bench/chat_stream.py runs
it beside the stack as the floor chat's relay is compared with; it serves nothing else.

    OLLAMA_URL=http://127.0.0.1:11434 uvicorn bare_relay:app --port 9000
"""

import os
from typing import Any

import aiohttp
import orjson

UPSTREAM = os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434") + "/api/chat"
ASK = {
    "model": "gemma-3-27b-it",
    "messages": [{"role": "user", "content": "긴 이야기를 들려줘."}],
    "stream": True,
}
HEAD = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
state: dict[str, aiohttp.ClientSession] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    while (await receive()).get("more_body"):  # the request's body: not read further
        pass
    async with state["http"].post(UPSTREAM, json=ASK) as upstream:
        await send({"type": "http.response.start", "status": 200, "headers": HEAD})
        partial = b""
        while data := await upstream.content.readany():
            *lines, partial = (partial + data).split(b"\n")
            text = "".join(_text(orjson.loads(line)) for line in lines if line)
            if text:
                event = b"event: delta\ndata: " + orjson.dumps({"content": text}) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"event: done\ndata: {}\n\n"})


def _text(chunk: dict[str, Any]) -> str:
    return str(chunk.get("message", {}).get("content", ""))


async def lifespan(receive: Any, send: Any) -> None:
    await receive()  # startup
    state["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    await send({"type": "lifespan.startup.complete"})
    await receive()  # shutdown
    await state["http"].close()
    await send({"type": "lifespan.shutdown.complete"})
