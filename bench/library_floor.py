"""The least the libraries a chat turn is built on cost per request on this machine: the CPU
that no chat service written with them can go below, printed beside chat's own by
bench/chat_overhead.py (issue 27, part 3).

A non-streamed turn makes two Redis calls (the admission script, then the record script) and
one LLM call (aiohttp), inside a FastAPI request through the service's middlewares. Each is
timed here alone, in this process on uvloop (as uvicorn runs the services), with the CPU
time of its thread: Redis calls of a script that only returns 1, with as many keys and
arguments as chat's two scripts send; the LLM call posts the same non-streamed chat to the
emulator. The framework's share is the edge's CPU per `GET /` under the same load, which
chat_overhead.py measures through the gateway.
"""

import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# chat's two scripts per turn: limits/admission.py ADMIT and store_scripts.py's record.
ADMISSION_SHAPE, RECORD_SHAPE = (11, 14), (11, 24)
MESSAGE = orjson.dumps({"role": "assistant", "content": "오늘은 도서관에 갔어! " * 8}).decode()


async def library_floor(redis_url: str, llm_url: str, llm_body: dict, calls: int) -> dict:
    """CPU microseconds per call: `admission` and `record` (a Redis script of that shape),
    `llm` (aiohttp's POST of `llm_body`, its JSON read)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    script = redis.register_script("return 1")
    try:
        async with aiohttp.ClientSession() as http:

            async def llm() -> None:
                async with http.post(llm_url, data=orjson.dumps(llm_body)) as response:
                    orjson.loads(await response.read())

            return {
                "admission": await _per_call(_script(script, *ADMISSION_SHAPE), calls),
                "record": await _per_call(_script(script, *RECORD_SHAPE), calls),
                "llm": await _per_call(llm, calls),
            }
    finally:
        await redis.aclose()


def _script(script: AsyncScript, keys: int, args: int) -> Callable[[], Awaitable[object]]:
    names = [f"floor:{n}" for n in range(keys)]
    values = [MESSAGE if n >= args - 2 else str(n * 1000) for n in range(args)]
    return lambda: script(keys=names, args=values)


async def _per_call(call: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(calls // 10):  # warm-up: connections, the script's SHA cached
        await call()
    started = time.thread_time()
    for _ in range(calls):
        await call()
    return (time.thread_time() - started) * 1e6 / calls
