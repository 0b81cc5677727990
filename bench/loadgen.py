"""What the benchmarks share: a stack on free ports, a closed-loop load, percentiles."""

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

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
                "MAX_CONCURRENT_USERS": "1000000",
                **(env or {}),
            },
            emulator_args=emulator_args,
            app_env=app_env,
            gen3d_workers=gen3d_workers,
        )
        with stack:
            yield stack


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
