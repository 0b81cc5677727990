"""What the benchmarks share: a stack on free ports, a closed-loop load, percentiles."""

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from avatar_devstack.environment import ONE_ADDRESS
from avatar_devstack.ports import Ports
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack

Call = Callable[[], Awaitable[float]]


@contextmanager
def bench_stack(
    emulators: bool,
    emulator_args: dict[str, list[str]] | None = None,
    ports: Ports | None = None,
    env: dict[str, str] | None = None,
    app_env: dict[str, dict[str, str]] | None = None,
    gen3d_workers: int = 1,
) -> Iterator[Stack]:
    """`env` adds to (or overrides) the environment below; `app_env` is per app."""
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        stack = Stack(
            ports or Ports.free(emulators=emulators),
            StackSettings(),
            data_dir=Path(tmp),
            log_dir=Path(tmp),
            # One load generator opens many sessions: the limits would measure themselves.
            env_overrides={
                "GATEWAY_LOG_LEVEL": "ERROR",
                "CHAT_RATE_PER_MIN": "1000000",
                "TTS_RATE_PER_MIN": "1000000",
                "MAX_CONCURRENT_USERS": "1000000",
                # Its simulated users are anonymous ids of one address (and a burst is one
                # caller's).
                **ONE_ADDRESS,
                "GEN3D_RATE_PER_HOUR": "1000000",
                "LLM_CALLS_PER_USER": "1000000",
                **(env or {}),
            },
            emulator_args=emulator_args,
            app_env=app_env,
            gen3d_workers=gen3d_workers,
        )
        with stack:
            yield stack


def rss_by_service(stack: Stack, field: str = "VmRSS") -> dict[str, int]:
    """Resident memory (KiB) of each running service process, replicas and workers apart.
    `field="RssAnon"`: only its private part (RSS also counts the pages of shared libraries,
    which every service maps from the same files)."""
    memory = {}
    if dead := stack.supervisor.dead():  # an exited process's /proc has no memory lines
        child = dead[0]
        raise RuntimeError(
            f"{child.name} exited with {child.process.returncode}{stack.supervisor.tail(child)}"
        )
    for child in stack.supervisor.children:
        if child.name.startswith(("emulator", "redis", "gateway", "oidc")):
            continue
        status = Path(f"/proc/{child.process.pid}/status").read_text()
        memory[child.name] = int(
            next(ln for ln in status.splitlines() if ln.startswith(field)).split()[1]
        )
    return memory


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) each process of the stack has used so far, this load
    generator's own process included (as `load generator`)."""
    pids = {child.name: child.process.pid for child in stack.supervisor.children}
    pids["load generator"] = os.getpid()
    return {name: process_seconds(pid) for name, pid in pids.items()}


def process_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(trust_env=False, limits=limits, timeout=30)


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def run_load(call: Call, requests: int, clients: int) -> list[float]:
    """`clients` workers share `requests` calls; each call returns its own latency (s)."""
    remaining = iter(range(requests))
    samples: list[float] = []

    async def worker() -> None:
        for _ in remaining:
            samples.append(await call())

    await asyncio.gather(*(worker() for _ in range(clients)))
    return samples


def timed(http: httpx.AsyncClient, method: str, url: str, body: Any = None) -> Call:
    async def call() -> float:
        started = time.perf_counter()
        response = await http.request(method, url, json=body)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    return call


def row(label: str, clients: int, base: list[float], measured: list[float], base_name: str) -> str:
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    m50, m99 = percentile(measured, 50) * 1000, percentile(measured, 99) * 1000
    return (
        f"{label:<24}{clients:>3}  {base_name} p50 {b50:7.2f} p99 {b99:7.2f} | "
        f"measured p50 {m50:7.2f} p99 {m99:7.2f} | difference p50 {m50 - b50:6.2f} "
        f"p99 {m99 - b99:6.2f} ms | ratio p50 {m50 / b50:5.2f}x p99 {m99 / b99:5.2f}x"
    )


# --- throughput: a lean HTTP/1.1 client, so the load generator costs little next to the stack


class RawClient:
    """One keep-alive connection sending a fixed request: what wrk does, in a few lines. It
    parses only the status, Content-Length or chunked framing, and the first Set-Cookie."""

    def __init__(self, url: str, method: str, body: Any = None, cookie: str | None = None):
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {parts.raw_path.decode()} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        if cookie:
            head.append(f"Cookie: {cookie}")
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        self.reader: asyncio.StreamReader | None = None

    async def send(self) -> tuple[int, bytes]:
        """(status, body) of one request on this client's connection."""
        status, head = await self._start()
        if b"transfer-encoding: chunked" not in head:
            return status, await self._sized(head)
        return status, b"".join([chunk async for chunk in self._chunks()])

    async def send_streamed(self, marker: bytes) -> tuple[int, list[tuple[float, int]]]:
        """(status, and for each chunk of a streamed (chunked) answer that holds `marker`:
        when it arrived, and how many times it holds it). A chunk is what the server wrote
        at once: one SSE event, or events it sent together."""
        status, head = await self._start()
        if b"transfer-encoding: chunked" not in head:  # an error's whole answer
            return status, [(time.perf_counter(), (await self._sized(head)).count(marker))]
        return status, [
            (time.perf_counter(), found)
            async for chunk in self._chunks()
            if (found := chunk.count(marker))
        ]

    async def _start(self) -> tuple[int, bytes]:
        """Sends the request: (status, the answer's head in lower case)."""
        if self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head[9:12]), head.lower()

    async def _sized(self, head: bytes) -> bytes:
        assert self.reader is not None
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return await self.reader.readexactly(length)

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self.reader is not None
        while size := int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
            yield (await self.reader.readexactly(size + 2))[:-2]
        await self.reader.readuntil(b"\r\n")  # the end of the last (empty) chunk

    def close(self) -> None:
        if self.reader is not None:
            self.writer.close()
            self.reader = None  # a later send connects again


async def throughput(clients: list[RawClient], seconds: float) -> tuple[float, list[float]]:
    """Every client sends back to back for `seconds`: (requests per second, latencies in s).
    Any answer but 2xx stops the run: a refusal would measure the limits, not the path."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one(raw: RawClient) -> None:
        while (started := time.perf_counter()) < deadline:
            status, body = await raw.send()
            if not 200 <= status < 300:
                raise RuntimeError(f"{status} during the load: {body[:300]!r}")
            samples.append(time.perf_counter() - started)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(one(raw) for raw in clients))
    finally:
        for raw in clients:
            raw.close()
    return len(samples) / (time.perf_counter() - began), samples
