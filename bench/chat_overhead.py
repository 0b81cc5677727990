"""Overhead of the chat path: gateway + chat service versus calling the LLM emulator directly,
measured in the same run with the emulator answering instantly.

    make bench            (or: uv run python bench/chat_overhead.py --requests 400)

Prints p50/p99 latency per path at 1 and 32 concurrent clients, the overhead (via - direct)
and their ratio, then the time to the first streamed delta both ways.
"""

import argparse
import asyncio
import time

import httpx
from loadgen import Call, bench_stack, client, row, run_load, timed

from avatar_chat.context.persona import build_system_prompt
from avatar_devstack.stack import Stack

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
USER = {"role": "user", "content": "안녕! 오늘 뭐 했어?"}
MODEL = "gemma-3-27b-it"


def first_chunk(http: httpx.AsyncClient, url: str, body: dict) -> Call:
    """Time until the first content-bearing line of a stream (NDJSON or SSE)."""

    async def call() -> float:
        started, elapsed = time.perf_counter(), None
        async with http.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():  # read to the end: reusable connection
                if elapsed is None and line.startswith(("{", "data:")):
                    elapsed = time.perf_counter() - started
        assert elapsed is not None, "the stream carried no content"
        return elapsed

    return call


async def measure(stack: Stack, requests: int) -> list[str]:
    system = {"role": "system", "content": build_system_prompt(PERSONA)}
    direct_body = {"model": MODEL, "messages": [system, USER], "stream": False}
    chat_body = {"messages": [USER], "persona": PERSONA, "model": MODEL, "tts_enabled": False}
    direct_url = f"{stack.emulator_url('ollama')}/api/chat"
    via_url = f"{stack.gateway_url}/api/chat"
    lines = []
    async with client() as http:
        for clients in (1, 32):
            direct = timed(http, "POST", direct_url, direct_body)
            via = timed(http, "POST", via_url, chat_body)
            await run_load(via, 20, clients)  # warm-up
            await run_load(direct, 20, clients)
            base = await run_load(direct, requests, clients)
            lines.append(
                row(
                    "chat round trip",
                    clients,
                    base,
                    await run_load(via, requests, clients),
                    "emulator",
                )
            )
        base = await run_load(
            first_chunk(http, direct_url, {**direct_body, "stream": True}), requests // 2, 1
        )
        via_first = await run_load(
            first_chunk(http, via_url, {**chat_body, "stream": True}), requests // 2, 1
        )
        lines.append(row("first delta", 1, base, via_first, "emulator"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    args = parser.parse_args()
    with bench_stack(emulators=True) as stack:
        lines = asyncio.run(measure(stack, args.requests))
    print(
        f"chat path: gateway + chat (measured) vs the LLM emulator directly; ms; n={args.requests}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
