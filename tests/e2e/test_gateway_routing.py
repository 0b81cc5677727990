"""The gateway alone (real Traefik with the project's config) in front of small stand-in
replicas: streamed responses pass through unbuffered, and load balancing skips a replica
whose health check fails."""

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from avatar_devstack.ports import Ports
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack
from avatar_emulators.server import serve_in_thread

EVENT_GAP_S = 1.0


def replica(name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"success": True, "data": {"status": "alive"}}

    @app.get("/api/{service}/whoami")
    async def whoami(service: str) -> dict:
        return {"replica": name}

    @app.get("/api/{service}/hang")
    async def hang(service: str) -> dict:
        await asyncio.sleep(30)
        return {}

    @app.get("/api/{service}/stream")
    async def stream(service: str) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"event: delta\ndata: first\n\n"
            await asyncio.sleep(EVENT_GAP_S)
            yield b"event: done\ndata: last\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[Stack, dict[str, ExitStack]]]:
    stops = {name: ExitStack() for name in ("a", "b")}
    urls = [stops[name].enter_context(serve_in_thread(replica(name))) for name in stops]
    servers = ",".join(urls)
    with tempfile.TemporaryDirectory(prefix="avatar-gateway-") as tmp:
        stack = Stack(
            Ports.free(emulators=False),
            StackSettings(),
            data_dir=Path(tmp),
            log_dir=Path(tmp),
            env_overrides={
                "CHAT_URLS": servers,
                "TTS_URLS": servers,
                "CHARACTERS_URLS": urls[0],
                "GATEWAY_RESPONSE_TIMEOUT": "1s",
                "GATEWAY_HEALTHCHECK_INTERVAL": "300ms",
            },
        )
        stack.start_gateway()
        try:
            yield stack, stops
        finally:
            stack.stop()
            for stop in stops.values():
                stop.close()


@pytest.mark.parametrize("service", ["chat", "tts"])
async def test_streamed_events_arrive_as_they_are_sent(replicas, service):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        started = time.perf_counter()
        arrivals = []
        async with client.stream("GET", f"/api/{service}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((line, time.perf_counter() - started))
    assert [line for line, _ in arrivals] == ["data: first", "data: last"]
    first_at, last_at = arrivals[0][1], arrivals[1][1]
    # Buffered, the first event would arrive together with the last one.
    assert first_at < EVENT_GAP_S / 2
    assert last_at >= EVENT_GAP_S


async def test_replicas_share_the_load_and_a_dead_one_is_skipped(replicas):
    stack, stops = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        seen = {(await client.get("/api/chat/whoami")).json()["replica"] for _ in range(6)}
        assert seen == {"a", "b"}
        stops["b"].close()
        await asyncio.sleep(1.0)  # a few health-check intervals
        answers = [await client.get("/api/chat/whoami") for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 6
    assert {r.json()["replica"] for r in answers} == {"a"}


async def test_a_hung_service_gets_a_gateway_timeout(replicas):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        started = time.perf_counter()
        response = await client.get("/api/characters/hang")
    assert response.status_code == 504
    assert time.perf_counter() - started < 5
