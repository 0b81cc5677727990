"""Overhead of the chat path: gateway + chat service versus calling the LLM emulator directly,
measured in the same run with the emulator answering instantly.

    make bench            (or: uv run python bench/chat_overhead.py --requests 400)

Prints p50/p99 latency per path at 1 and 32 concurrent clients, the overhead (via - direct)
and their ratio, then the time to the first streamed delta both ways.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from avatar_chat.persona import build_system_prompt
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Ports, Stack

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
USER = {"role": "user", "content": "안녕! 오늘 뭐 했어?"}
MODEL = "gemma-3-27b-it"


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def run_load(
    call: Callable[[], Awaitable[float]], requests: int, clients: int
) -> list[float]:
    """`clients` workers share `requests` calls; each call returns its own latency (s)."""
    remaining = iter(range(requests))
    samples: list[float] = []

    async def worker() -> None:
        for _ in remaining:
            samples.append(await call())

    await asyncio.gather(*(worker() for _ in range(clients)))
    return samples


def timed(client: httpx.AsyncClient, url: str, body: dict) -> Callable[[], Awaitable[float]]:
    async def call() -> float:
        started = time.perf_counter()
        response = await client.post(url, json=body)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    return call


def first_chunk(client: httpx.AsyncClient, url: str, body: dict) -> Callable[[], Awaitable[float]]:
    """Time until the first content-bearing line of a stream (NDJSON or SSE)."""

    async def call() -> float:
        started, elapsed = time.perf_counter(), None
        async with client.stream("POST", url, json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():  # read to the end: reusable connection
                if elapsed is None and line.startswith(("{", "data:")):
                    elapsed = time.perf_counter() - started
        assert elapsed is not None, "the stream carried no content"
        return elapsed

    return call


def row(label: str, clients: int, direct: list[float], via: list[float]) -> str:
    d50, d99 = percentile(direct, 50) * 1000, percentile(direct, 99) * 1000
    v50, v99 = percentile(via, 50) * 1000, percentile(via, 99) * 1000
    return (
        f"{label:<18}{clients:>3}  direct p50 {d50:7.2f} p99 {d99:7.2f} | "
        f"gateway+chat p50 {v50:7.2f} p99 {v99:7.2f} | overhead p50 {v50 - d50:6.2f} "
        f"p99 {v99 - d99:6.2f} ms | ratio p50 {v50 / d50:5.2f}x p99 {v99 / d99:5.2f}x"
    )


async def measure(stack: Stack, requests: int) -> list[str]:
    system = {"role": "system", "content": build_system_prompt(PERSONA)}
    direct_body = {"model": MODEL, "messages": [system, USER], "stream": False}
    chat_body = {"messages": [USER], "persona": PERSONA, "model": MODEL}
    direct_url = f"{stack.emulator_url('ollama')}/api/chat"
    via_url = f"{stack.gateway_url}/api/chat"
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    lines = []
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as client:
        for clients in (1, 32):
            await run_load(timed(client, via_url, chat_body), 20, clients)  # warm-up
            await run_load(timed(client, direct_url, direct_body), 20, clients)
            direct = await run_load(timed(client, direct_url, direct_body), requests, clients)
            via = await run_load(timed(client, via_url, chat_body), requests, clients)
            lines.append(row("chat round trip", clients, direct, via))
        stream_direct = await run_load(
            first_chunk(client, direct_url, {**direct_body, "stream": True}), requests // 2, 1
        )
        stream_via = await run_load(
            first_chunk(client, via_url, {**chat_body, "stream": True}), requests // 2, 1
        )
        lines.append(row("first delta", 1, stream_direct, stream_via))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        stack = Stack(
            Ports.free(emulators=True),
            StackSettings(),
            data_dir=Path(tmp),
            log_dir=Path(tmp),
            env_overrides={"GATEWAY_LOG_LEVEL": "ERROR"},
        )
        stack.start()
        try:
            lines = asyncio.run(measure(stack, args.requests))
        finally:
            stack.stop()
    print(f"chat path overhead, {args.requests} requests per row, times in ms")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
