"""The chat limits (issue 6) with two chat replicas behind the gateway, the LLM emulator
answering instantly, each against a baseline measured in the same run.

    make bench            (or: uv run python bench/chat_limits.py --bursts 10 --requests 200)

1. Admission under a burst of 200 new sessions at once through the gateway, with
   MAX_CONCURRENT_USERS=20: p50/p99 of the refused (503) and of the admitted (200) answers,
   against the same burst of the edge's `GET /` through the same gateway.
2. Redis round trips per chat request, counted by a TCP proxy between the chat replicas and
   Redis (a pipeline or a script is one round trip), for an existing session in a short
   conversation (no summarization due) and for a new session, by what they touch.
"""

import argparse
import asyncio
import threading
import time
from collections import Counter
from typing import Any

import httpx
from loadgen import bench_stack, row, run_load, timed
from redis.asyncio import Redis

from avatar_devstack.ports import Ports
from avatar_devstack.stack import Stack

BURST = 200
LIMIT = 20
PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
HELLO = {"role": "user", "content": "안녕! 오늘 뭐 했어?"}
NEW = {"messages": [HELLO], "persona": PERSONA, "tts_enabled": False}
# What a round trip touches, told by the keys in its request: the first match names it.
# The session store carries the summary cache (chat:session:{id}:summaries) in its own trips.
# (Admission's script carries the rate limit too: it names chat:active first.)
KINDS = {b"chat:active": "admission", b"chat:session": "sessions"}

# Round trips per request before issue 6 (existing: owner check, then the turn's script; new:
# the script), measured with this benchmark against the chat code of commit 46ef2d1^.
BEFORE_ISSUE_6 = {"new session": 1, "existing session": 2}


class RoundTripCounter:
    """A TCP proxy in front of Redis, on its own thread. A round trip starts when a client
    sends after having had its last answer (or first on a connection), so however TCP splits
    the bytes, a command, a pipeline or a script each count once."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.counts = Counter({kind: 0 for kind in [*KINDS.values(), "other"]})
        started = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._serve(started),), daemon=True).start()
        started.wait()

    def total(self) -> int:
        return sum(self.counts.values())

    async def _serve(self, started: threading.Event) -> None:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        await server.serve_forever()

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.redis_port)
        waiting = False  # a request on this connection has had no answer yet

        async def requests() -> None:
            nonlocal waiting
            while data := await client_in.read(65536):
                if not waiting:
                    waiting = True
                    self.counts[next((k for m, k in KINDS.items() if m in data), "other")] += 1
                redis_out.write(data)
                await redis_out.drain()
            redis_out.close()

        async def answers() -> None:
            nonlocal waiting
            while data := await redis_in.read(65536):
                waiting = False
                client_out.write(data)
                await client_out.drain()
            client_out.close()

        await asyncio.gather(requests(), answers(), return_exceptions=True)


async def burst(method: str, url: str, body: Any = None) -> list[tuple[int, float]]:
    """BURST requests at once, each on its own new connection as from BURST new users:
    (status, latency in s) of each. (A reused httpx pool would not keep BURST connections.)"""
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=120) as http:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            response = await http.request(method, url, json=body)
            return response.status_code, time.perf_counter() - started

        return await asyncio.gather(*(one() for _ in range(BURST)))


async def admission(stack: Stack, bursts: int) -> list[str]:
    redis = Redis.from_url(stack.env["REDIS_URL"])
    root, chat = f"{stack.gateway_url}/", f"{stack.gateway_url}/api/chat"
    base, admitted, refused = [], [], []
    for warm_up in [True] + [False] * bursts:  # the same order each time: baseline first
        base_burst = await burst("GET", root)
        await redis.delete("chat:active")  # the previous burst's sessions
        chat_burst = await burst("POST", chat, NEW)
        statuses = Counter(status for status, _ in chat_burst)
        if statuses != {200: LIMIT, 503: BURST - LIMIT}:
            raise RuntimeError(f"expected {LIMIT} admitted, the rest refused: {statuses}")
        if not warm_up:
            base += [latency for _, latency in base_burst]
            admitted += [latency for status, latency in chat_burst if status == 200]
            refused += [latency for status, latency in chat_burst if status == 503]
    await redis.aclose()
    return [
        row("refused (503)", BURST, base, refused, "GET /"),
        row("admitted (200)", BURST, base, admitted, "GET /"),
    ]


async def round_trips(stack: Stack, counter: RoundTripCounter, requests: int) -> list[str]:
    chat = f"{stack.gateway_url}/api/chat"
    lines, shares = [], {}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        baseline = timed(http, "GET", f"{stack.gateway_url}/")
        await run_load(baseline, 50, 1)  # warm-up
        base = await run_load(baseline, requests, 1)
        sessions: list[str] = []

        async def new_session() -> float:
            started = time.perf_counter()
            response = await http.post(chat, json=NEW)
            response.raise_for_status()
            data = response.json()["data"]
            sessions.append(data["session_id"])
            return time.perf_counter() - started

        async def second_turn() -> float:
            session_id = sessions.pop(0)  # one more turn each: a short conversation
            body = {
                **NEW,
                "session_id": session_id,
                "messages": [HELLO, {"role": "assistant", "content": "응!"}, HELLO],
            }
            return await timed(http, "POST", chat, body)()

        await run_load(new_session, 50, 1)  # warm-up: pools, connections, scripts loaded
        await run_load(second_turn, 50, 1)
        sessions.clear()
        for label, call in (("new session", new_session), ("existing session", second_turn)):
            before, total_before = dict(counter.counts), counter.total()
            samples = await run_load(call, requests, 1)
            per_request = (counter.total() - total_before) / requests
            shares[label] = {k: (counter.counts[k] - before[k]) / requests for k in before}
            split = ", ".join(f"{k} {v:.2f}" for k, v in shares[label].items())
            lines.append(
                f"{row(label, 1, base, samples, 'GET /')} | redis {per_request:.2f} round trips"
                f"/req ({split})"
            )
    added = ", ".join(
        f"{label} {sum(share.values()) - BEFORE_ISSUE_6[label]:.2f} "
        f"({sum(share.values()):.2f} now, {BEFORE_ISSUE_6[label]} before)"
        for label, share in shares.items()
    )
    lines.append(f"round trips added by issue 6 per request (target <= 2): {added}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=10, help=f"bursts of {BURST} measured")
    parser.add_argument("--requests", type=int, default=200, help="requests per round-trip row")
    args = parser.parse_args()
    replicas = {"chat": 2}
    # Only the chat replicas speak to Redis through the counting proxy.
    ports = Ports.free(True, replicas)
    counter = RoundTripCounter(ports.redis)
    proxied = {"chat": {"REDIS_URL": f"redis://127.0.0.1:{counter.port}/0"}}
    with bench_stack(emulators=True, ports=ports, app_env=proxied) as stack:
        trip_lines = asyncio.run(round_trips(stack, counter, args.requests))
    env = {
        "MAX_CONCURRENT_USERS": str(LIMIT),
        "MAX_SESSIONS_PER_USER": str(BURST),  # one client makes the whole burst
        "LLM_QUEUE_WAIT_S": "60",
    }
    with bench_stack(emulators=True, ports=Ports.free(True, replicas), env=env) as stack:
        burst_lines = asyncio.run(admission(stack, args.bursts))
    print(
        f"admission: {BURST} new sessions at once through the gateway, 2 chat replicas, "
        f"MAX_CONCURRENT_USERS={LIMIT}; {args.bursts} bursts; ms"
    )
    print("\n".join(burst_lines))
    print(
        f"redis round trips per chat request (chat's Redis behind a counting proxy); "
        f"1 client, {args.requests} requests per row; ms"
    )
    print("\n".join(trip_lines))


if __name__ == "__main__":
    main()
