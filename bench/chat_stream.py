"""The streamed relay (issue 27): what each delta of a streamed reply costs the chat service,
next to what it costs Traefik (the gateway) and the LLM emulator in the same run, at 50 and
200 concurrent streams; and how evenly the deltas reach the client.

Each client is a returning visitor (its own anonymous cookie) that streams one reply after
another (`stream: true`, no speech) through the gateway, from an Ollama emulator at 30 tokens
a second, 128 tokens a reply. CPU comes from /proc for every process, the load generator's
own included: it reads the raw HTTP/1.1 stream and counts `event: delta` per chunk, so it
costs less than what it measures.

Beside it, the same load on bench/bare_relay.py (a bare ASGI app relaying the same emulator
with the same server, client and JSON library, called directly) shows the least a relay in
Python costs per delta on this machine.

Targets: chat's CPU per delivered delta <= 0.75x Traefik's; the p99 gap between a stream's
deltas <= 1.5x the emulator's pace (1/30 s).

    make bench            (or: uv run python bench/chat_stream.py --seconds 10)
    uv run python bench/chat_stream.py --profile relay.svg   (py-spy's flame graph of chat)
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

from chat_overhead import flame_graph, visitor_cookie
from loadgen import RawClient, bench_stack, cpu_seconds, percentile, process_seconds

from avatar_devstack.ports import free_port, port_open
from avatar_devstack.stack import Stack

TOKENS_PER_S, REPLY_TOKENS = 30, 128
PACE_S = 1 / TOKENS_PER_S
EMULATOR = {
    "ollama": [
        *("--first-token-latency", "0.3"),
        *("--tokens-per-second", str(TOKENS_PER_S)),
        *("--reply-words", str(REPLY_TOKENS)),
    ]
}
BODY = {
    "messages": [{"role": "user", "content": "긴 이야기를 들려줘."}],
    "persona": "이야기를 좋아하는 할머니. 느긋하게 말한다.",
    "stream": True,
    "tts_enabled": False,
}
DELTA = b"event: delta"
TARGET_CPU_RATIO, TARGET_GAP_RATIO = 0.75, 1.5
# Room for every stream at once: the load must measure the relay, not the queue for a slot.
ROOM = {"LLM_MAX_IN_FLIGHT": "512", "MAX_SESSIONS_PER_USER": "1000000"}


class Streams:
    """`count` clients streaming replies back to back; the gaps between each stream's deltas
    (a delta that came in the same chunk as the one before it: a gap of 0)."""

    def __init__(self, url: str, cookies: list[str | None]) -> None:
        self.clients = [RawClient(url, "POST", BODY, cookie=cookie) for cookie in cookies]
        self.deltas = 0
        self.gaps: list[float] = []
        self.measuring = False

    async def run(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(self._one(raw, n, deadline) for n, raw in enumerate(self.clients)))

    async def _one(self, raw: RawClient, n: int, deadline: float) -> None:
        # Staggered starts: streams that begin together would keep their deltas in step.
        await asyncio.sleep(PACE_S * (n % 16) / 16)
        try:
            while time.perf_counter() < deadline:
                status, marked = await raw.send_streamed(DELTA)
                if status != 200:
                    raise RuntimeError(f"{status} during the load")
                if self.measuring:
                    self._count(marked)
        finally:
            raw.close()

    def _count(self, marked: list[tuple[float, int]]) -> None:
        for (before, _), (at, found) in pairwise(marked):
            self.gaps += [at - before] + [0.0] * (found - 1)
        self.deltas += sum(found for _, found in marked)


async def measure(stack: Stack, streams: int, seconds: float, profile: Path | None) -> list[str]:
    # At once: each first reply takes the emulator's 4.5 s.
    cookies = await asyncio.gather(*(visitor_cookie(stack.gateway_url) for _ in range(streams)))
    load = Streams(f"{stack.gateway_url}/api/chat", list(cookies))
    profiled = flame_graph(stack, profile, seconds) if profile else asyncio.sleep(seconds)
    spent = await costed(load, seconds, profiled, lambda: cpu_seconds(stack))
    with bare_relay(stack) as (url, pid):
        floor = Streams(url, [None] * streams)
        relay = await costed(floor, seconds, asyncio.sleep(seconds), lambda: cpu_pid(pid))
    return report(streams, load, spent, relay["bare relay"])


async def costed(
    load: Streams, seconds: float, meanwhile: Awaitable[object], cpu: Callable[[], dict]
) -> dict[str, float]:
    """Runs `load` and, past its warm-up, what happens `meanwhile`: the CPU each process
    spent per delta delivered in that time (microseconds)."""
    running = asyncio.create_task(load.run(seconds + 6))
    await asyncio.sleep(5)  # warm-up: every stream past its first reply
    load.measuring = True
    before = cpu()
    await meanwhile
    after = cpu()
    load.measuring = False
    await running
    return {name: (after[name] - before[name]) * 1e6 / load.deltas for name in after}


@contextmanager
def bare_relay(stack: Stack) -> Iterator[tuple[str, int]]:
    """bare_relay.py on a free port, asking the stack's Ollama emulator: (its URL, its pid)."""
    port = free_port()
    env = {**os.environ, "OLLAMA_URL": stack.emulator_url("ollama")}
    argv = [sys.executable, "-m", "uvicorn", "bare_relay:app", "--port", str(port)]
    relay = subprocess.Popen(
        [*argv, "--no-access-log", "--log-level", "warning"], cwd=Path(__file__).parent, env=env
    )
    try:
        while not port_open(port):
            if relay.poll() is not None:
                raise RuntimeError("bare_relay.py did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", relay.pid
    finally:
        relay.terminate()
        relay.wait()


def cpu_pid(pid: int) -> dict[str, float]:
    return {"bare relay": process_seconds(pid), "load generator": process_seconds(os.getpid())}


def report(streams: int, load: Streams, spent: dict[str, float], floor: float) -> list[str]:
    chat = sum(us for name, us in spent.items() if name.split("-")[0] == "chat")
    traefik = spent["traefik"]
    gap_p50, gap_p99 = percentile(load.gaps, 50), percentile(load.gaps, 99)
    return [
        f"{streams} concurrent streams: {load.deltas} deltas measured; CPU us per delta: "
        + ", ".join(f"{name} {us:.0f}" for name, us in sorted(spent.items()) if us >= 1),
        f"  a bare Python relay (bench/bare_relay.py, called directly, same load): {floor:.0f} us"
        f" per delta, {floor / traefik:.2f}x Traefik's: the floor of a relay in Python here",
        _verdict(
            f"chat / Traefik CPU per delta, {streams} streams",
            chat / traefik,
            f"{chat:.0f} / {traefik:.0f} us",
            TARGET_CPU_RATIO,
        ),
        _verdict(
            f"p99 gap between deltas / pace, {streams} streams",
            gap_p99 / PACE_S,
            f"p50 {gap_p50 * 1000:.1f} ms, p99 {gap_p99 * 1000:.1f} ms, pace {PACE_S * 1000:.1f}",
            TARGET_GAP_RATIO,
        ),
    ]


def _verdict(what: str, ratio: float, figures: str, target: float) -> str:
    met = "met" if ratio <= target else "NOT met"
    return f"{what:<46}{ratio:6.2f}x ({figures}) target <= {target}x: {met}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="per measurement")
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--profile", type=Path, metavar="SVG", help="py-spy of the first load")
    args = parser.parse_args()
    for i, streams in enumerate(args.streams):
        with bench_stack(emulators=True, emulator_args=EMULATOR, env=ROOM) as stack:
            profile = args.profile if i == 0 else None
            lines = asyncio.run(measure(stack, streams, args.seconds, profile))
        print("\n".join(lines), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
