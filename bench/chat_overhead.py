"""The chat path (issue 14): the gateway + chat service against calling the LLM emulator
directly, and against the edge's `GET /` through the same gateway, all in the same run, with
the emulator answering at once. Once with one chat replica, once with two. The direct call is
the very request chat makes of the LLM (read back from the emulator), options included.

    make bench            (or: uv run python bench/chat_overhead.py --seconds 5)
    uv run python bench/chat_overhead.py --profile chat.svg    (py-spy's flame graph too)

Each client is a returning visitor (its own anonymous cookie) opening a new session per
request, so every request goes through admission (rate, concurrent sessions, the caller's
share), the in-flight cap (LLM_MAX_IN_FLIGHT, 8: 32 clients queue for it) and records its
turn; the run checks that every answered request left its session in Redis. The limits are
raised, not removed: one load generator must not measure the refusals.

Targets: c=1 p50 of chat minus the direct call <= 1.5 ms, for the whole reply and for the
first streamed delta; the chat service's own CPU per request at c=32 <= 500 us (issue 27: on
two shared cores, throughput against `GET /` measures the emulator and the load generator
too, so it is reported, not judged). Idle RSS <= 80 MB per service.
"""

import argparse
import asyncio
import time
from pathlib import Path

import httpx
import uvloop
from library_floor import library_floor
from loadgen import RawClient, bench_stack, cpu_seconds, percentile, rss_by_service, throughput
from redis.asyncio import Redis

from avatar_devstack.ports import Ports
from avatar_devstack.stack import Stack

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
USER = {"role": "user", "content": "안녕! 오늘 뭐 했어?"}
MODEL = "gemma-3-27b-it"
CHAT = {"messages": [USER], "persona": PERSONA, "model": MODEL, "tts_enabled": False}
TARGET_OVERHEAD_MS, TARGET_CHAT_CPU_US, TARGET_IDLE_MB = 1.5, 500, 80


class Paths:
    """The three requests of the table: each method gives `count` keep-alive clients."""

    def __init__(self, stack: Stack, cookies: list[str], direct: dict) -> None:
        self.stack, self.cookies, self.direct_body = stack, cookies, direct

    def direct(self, count: int) -> list[RawClient]:
        url = f"{self.stack.emulator_url('ollama')}/api/chat"
        return [RawClient(url, "POST", self.direct_body) for _ in range(count)]

    def home(self, count: int) -> list[RawClient]:
        url = f"{self.stack.gateway_url}/"
        return [RawClient(url, "GET", cookie=cookie) for cookie in self.cookies[:count]]

    def chat(self, count: int) -> list[RawClient]:
        url = f"{self.stack.gateway_url}/api/chat"
        return [RawClient(url, "POST", CHAT, cookie=cookie) for cookie in self.cookies[:count]]


async def chat_sends(stack: Stack) -> dict:
    """The non-streamed request chat makes of the LLM for CHAT, as the emulator received it
    (its prompt recorder): the direct call is the same call, options and stop included."""
    emulator = stack.emulator_url("ollama")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        (await http.delete(f"{emulator}/_emulator/prompts")).raise_for_status()
        (await http.post(f"{stack.gateway_url}/api/chat", json=CHAT)).raise_for_status()
        sent = (await http.get(f"{emulator}/_emulator/prompts")).json()[-1]
    body = {"model": sent["model"], "messages": sent["messages_received"], "stream": False}
    return {**body, "options": sent["options"]}


async def visitor_cookie(gateway: str) -> str:
    """A returning visitor's cookie: what its first chat request was given. (A client of
    its own: a shared one would send the first visitor's cookie along, and every later
    visitor would be given none.)"""
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        response = await http.post(f"{gateway}/api/chat", json=CHAT)
    response.raise_for_status()
    assert response.cookies, "a new visitor was given no cookie"
    return "; ".join(f"{name}={value}" for name, value in response.cookies.items())


async def costed(
    stack: Stack, clients: list[RawClient], seconds: float
) -> tuple[tuple[float, list[float]], dict[str, float]]:
    """A load and the CPU each process spent per request on it (microseconds)."""
    await throughput(clients, 1.0)  # warm-up: connections, caches
    before = cpu_seconds(stack)
    rate, samples = await throughput(clients, seconds)
    after = cpu_seconds(stack)
    spent = {name: (after[name] - before[name]) * 1e6 / len(samples) for name in after}
    return (rate, samples), {name: us for name, us in spent.items() if us >= 5}


def first_delta(http: httpx.AsyncClient, url: str, body: dict):
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


async def first_deltas(
    stack: Stack, cookie: str, direct_body: dict, requests: int
) -> tuple[list[float], list[float]]:
    headers = {"Cookie": cookie}
    async with httpx.AsyncClient(trust_env=False, timeout=30, headers=headers) as http:
        direct = first_delta(
            http, f"{stack.emulator_url('ollama')}/api/chat", {**direct_body, "stream": True}
        )
        via = first_delta(http, f"{stack.gateway_url}/api/chat", {**CHAT, "stream": True})
        samples: dict[str, list[float]] = {"direct": [], "via": []}
        for _ in range(requests):  # interleaved: both see the same machine
            samples["direct"].append(await direct())
            samples["via"].append(await via())
        return samples["direct"], samples["via"]


async def sessions_recorded(stack: Stack) -> int:
    async with Redis.from_url(stack.env["REDIS_URL"]) as redis:
        keys = [key async for key in redis.scan_iter("chat:session:*", count=1000)]
    return sum(1 for key in keys if key.count(b":") == 2)  # the session hashes only


async def peak_rss(stack: Stack, names: list[str], until: asyncio.Task) -> dict[str, int]:
    peak: dict[str, int] = {}
    while not until.done():
        for name, kib in rss_by_service(stack).items():
            if name in names:
                peak[name] = max(peak.get(name, 0), kib)
        await asyncio.sleep(0.5)
    return peak


def ms(samples: list[float], q: int) -> float:
    return percentile(samples, q) * 1000


async def flame_graph(stack: Stack, svg: Path, seconds: float) -> None:
    """py-spy samples the (first) chat replica under the c=32 load into a flame graph (or
    into py-spy's raw collapsed stacks, for a path ending in .txt)."""
    await asyncio.sleep(1.5)  # past the load's warm-up
    pid = next(c.process.pid for c in stack.supervisor.children if c.name == "chat")
    argv = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"]
    argv += ["--format", "raw" if svg.suffix == ".txt" else "flamegraph"]
    spy = await asyncio.create_subprocess_exec(
        *argv, "-o", str(svg), stdout=asyncio.subprocess.DEVNULL
    )
    await spy.wait()


async def measure(
    stack: Stack,
    seconds: float,
    replicas: int,
    direct: dict,
    floor: dict,
    profile: Path | None = None,
) -> list[str]:
    idle = rss_by_service(stack)
    private = rss_by_service(stack, "RssAnon")
    cookies = [await visitor_cookie(stack.gateway_url) for _ in range(32)]
    paths = Paths(stack, cookies, direct)
    named = {"direct": paths.direct, "home": paths.home, "chat": paths.chat}
    before = await sessions_recorded(stack)
    single = {name: (await costed(stack, make(1), seconds))[0] for name, make in named.items()}
    loaded, cpu = {}, {}
    for name in ("direct", "home"):
        loaded[name], cpu[name] = await costed(stack, named[name](32), seconds)
    chat_run = asyncio.create_task(costed(stack, paths.chat(32), seconds))
    watch = peak_rss(stack, [n for n in idle if n.split("-")[0] == "chat"], chat_run)
    profiled = flame_graph(stack, profile, seconds - 1) if profile else asyncio.sleep(0)
    peak, _ = await asyncio.gather(watch, profiled)
    loaded["chat"], cpu["chat"] = await chat_run
    # Every answered chat request, warm-ups included, started a session of its own.
    recorded = await sessions_recorded(stack) - before
    first = await first_deltas(stack, cookies[0], direct, 200)
    return [
        *report(replicas, single, loaded, first, idle, peak, recorded),
        _chat_cpu(cpu["chat"]),
        _floor(floor, cpu["home"]["edge"], cpu["chat"]),
        "idle private (anonymous) memory MB: "
        + ", ".join(f"{n} {kib / 1024:.0f}" for n, kib in private.items()),
        *(
            f"CPU us per request at c=32, {LABELS[name]}: "
            + ", ".join(f"{process} {us:.0f}" for process, us in sorted(spent.items()))
            for name, spent in cpu.items()
        ),
    ]


LABELS = {
    "direct": "the LLM emulator called directly",
    "home": "GET / through the gateway",
    "chat": "POST /api/chat through the gateway",
}


def report(replicas, single, loaded, first, idle, peak, recorded) -> list[str]:
    lines = [
        f"chat path, {replicas} chat replica(s); ms and requests/s, measured side by side",
        f"{'request':<38}{'c=1 p50':>9}{'c=1 p99':>9}{'c=32 req/s':>12}{'c=32 p50':>10}"
        f"{'c=32 p99':>10}",
    ]
    for name, label in LABELS.items():
        (_, one), (rate, many) = single[name], loaded[name]
        lines.append(
            f"{label:<38}{ms(one, 50):9.2f}{ms(one, 99):9.2f}{rate:12.0f}"
            f"{ms(many, 50):10.2f}{ms(many, 99):10.2f}"
        )
    direct_first, via_first = first
    lines.append(
        f"{'first streamed delta, direct / chat':<38}{ms(direct_first, 50):9.2f}"
        f"{ms(direct_first, 99):9.2f}  / {ms(via_first, 50):.2f} p50, {ms(via_first, 99):.2f} p99"
    )
    overhead = ms(single["chat"][1], 50) - ms(single["direct"][1], 50)
    first_overhead = ms(via_first, 50) - ms(direct_first, 50)
    share = loaded["chat"][0] / loaded["home"][0]
    lines += [
        _verdict("c=1 overhead p50, chat - direct", overhead, "ms", overhead <= TARGET_OVERHEAD_MS,
                 f"<= {TARGET_OVERHEAD_MS}"),
        _verdict("first delta overhead p50", first_overhead, "ms",
                 first_overhead <= TARGET_OVERHEAD_MS, f"<= {TARGET_OVERHEAD_MS}"),
        f"{'c=32 chat / GET / throughput':<38}{share * 100:9.2f} %   (reported, not a target)",
        f"turns recorded: {recorded} new sessions in Redis for "
        f"{len(single['chat'][1]) + len(loaded['chat'][1])} measured chat requests (and warm-ups)",
        "idle RSS MB: " + ", ".join(f"{n} {kib / 1024:.0f}" for n, kib in idle.items())
        + f" (target <= {TARGET_IDLE_MB} each: "
        + ("met" if max(idle.values()) <= TARGET_IDLE_MB * 1024 else "NOT met") + ")",
        "chat RSS MB under c=32: " + ", ".join(f"{n} {kib / 1024:.0f}" for n, kib in peak.items()),
    ]  # fmt: skip
    return lines


def _chat_cpu(spent: dict[str, float]) -> str:
    """The chat replicas' CPU per request (each replica served its share of the requests)."""
    us = sum(us for name, us in spent.items() if name.split("-")[0] == "chat")
    return _verdict("chat CPU per request at c=32", us, "us", us <= TARGET_CHAT_CPU_US,
                    f"<= {TARGET_CHAT_CPU_US}")  # fmt: skip


def _floor(floor: dict, edge_us: float, spent: dict[str, float]) -> str:
    """What the libraries alone cost per chat request (bench/library_floor.py), beside the
    target: the edge's `GET /` stands for FastAPI and the middlewares."""
    least = edge_us + sum(floor.values())
    chat = sum(us for name, us in spent.items() if name.split("-")[0] == "chat")
    parts = ", ".join(f"{name} {us:.0f}" for name, us in floor.items())
    return (
        f"{'the libraries alone, per chat request':<38}{least:9.2f} us  (FastAPI and the "
        f"middlewares, as the edge's GET / {edge_us:.0f}; Redis scripts and the LLM call: "
        f"{parts}); chat spends {chat / least:.1f}x it; the target is "
        f"{TARGET_CHAT_CPU_US / least:.2f}x it"
    )


def _verdict(what: str, value: float, unit: str, met: bool, target: str) -> str:
    return f"{what:<38}{value:9.2f} {unit:<3} target {target}: {'met' if met else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per measurement")
    parser.add_argument(
        "--profile", type=Path, metavar="SVG", help="py-spy flame graph of chat under c=32"
    )
    args = parser.parse_args()
    for replicas in (1, 2):
        ports = Ports.free(emulators=True, replicas={"chat": replicas})
        with bench_stack(emulators=True, ports=ports) as stack:
            profile = args.profile if replicas == 1 else None
            direct = asyncio.run(chat_sends(stack))
            llm_url = f"{stack.emulator_url('ollama')}/api/chat"
            floor = uvloop.run(library_floor(stack.env["REDIS_URL"], llm_url, direct, 3000))
            lines = asyncio.run(measure(stack, args.seconds, replicas, direct, floor, profile))
        print("\n".join(lines), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
