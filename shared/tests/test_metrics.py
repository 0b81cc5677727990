"""/metrics of a service: requests by route template and status, the GPU upstreams' latency,
the LLM's tokens, the speech cache and the services' gauges, in Prometheus's text format."""

import os
import signal
import subprocess
import sys
import time

import httpx

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.app import create_app as chat_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port, port_open
from avatar_emulators import gpt_sovits, ollama
from avatar_emulators.server import serve_in_thread
from avatar_tts.app import create_app as tts_app
from avatar_tts.settings import TtsSettings
from tests.helpers import metric, returning_visitor

NOWHERE = f"http://127.0.0.1:{free_port()}"


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_are_counted_by_route_template_and_status(app_client, redis_url):
    async with app_client(characters_app(CharactersSettings(redis_url=redis_url))) as client:
        route = {
            "service": "characters",
            "method": "GET",
            "route": "/api/characters/{character_id}",
        }
        before = await scrape(client)
        for character_id in ("hermione", "sherlock", "nobody"):
            await client.get(f"/api/characters/{character_id}")
        await client.get("/no/such/path")
        after = await scrape(client)
    found = "avatar_http_requests_total"
    assert (
        metric(after, found, **route, status="200") - metric(before, found, **route, status="200")
        == 2
    )
    assert (
        metric(after, found, **route, status="404") - metric(before, found, **route, status="404")
        == 1
    )
    assert metric(after, found, route="unmatched", status="404") >= 1
    assert "/api/characters/hermione" not in after  # no series per id
    timed = "avatar_http_request_duration_seconds_count"
    assert metric(after, timed, **route) - metric(before, timed, **route) == 3


async def test_chat_reports_llm_latency_tokens_and_active_sessions(app_client, redis_url):
    with serve_in_thread(ollama.create_app(ollama.OllamaConfig())) as llm:
        settings = ChatSettings(
            redis_url=redis_url, ollama_base_url=llm, tts_url=NOWHERE, characters_url=NOWHERE
        )
        async with app_client(chat_app(settings)) as chat:
            returning_visitor(chat)
            before = await scrape(chat)
            body = {"messages": [{"role": "user", "content": "안녕"}], "persona": "p"}
            reply = (await chat.post("/api/chat", json={**body, "tts_enabled": False})).json()
            after = await scrape(chat)
    usage = reply["data"]["usage"]
    tokens = "avatar_llm_tokens_total"
    for kind, count in (
        ("prompt", usage["prompt_tokens"]),
        ("completion", usage["completion_tokens"]),
    ):
        assert metric(after, tokens, kind=kind) - metric(before, tokens, kind=kind) == count
    calls = "avatar_upstream_duration_seconds_count"
    assert metric(after, calls, upstream="llm", outcome="ok") > metric(
        before, calls, upstream="llm", outcome="ok"
    )
    assert metric(after, "avatar_chat_active_sessions") == 1


async def test_tts_reports_its_cache_and_the_engines_latency(app_client, redis_url, tmp_path):
    with serve_in_thread(gpt_sovits.create_app(gpt_sovits.GptSovitsConfig())) as sovits:
        settings = TtsSettings(redis_url=redis_url, assets_dir=str(tmp_path), tts_base_url=sovits)
        async with app_client(tts_app(settings)) as tts:
            before = await scrape(tts)
            for _ in range(3):
                await tts.post("/api/tts", json={"text": "안녕하세요"})
            after = await scrape(tts)
    cache = "avatar_tts_cache_total"
    assert metric(after, cache, result="made") - metric(before, cache, result="made") == 1
    assert metric(after, cache, result="hit") - metric(before, cache, result="hit") == 2
    calls = "avatar_upstream_duration_seconds_count"
    assert (
        metric(after, calls, upstream="tts", outcome="ok")
        - metric(before, calls, upstream="tts", outcome="ok")
        == 1
    )


def test_several_worker_processes_report_as_one(redis_url, tmp_path):
    # uvicorn --workers 2 behind one port: each request lands in one process, and each
    # scrape in one too; with PROMETHEUS_MULTIPROC_DIR every scrape sees them all.
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "avatar_characters.app:create_app",
        "--port", str(port), "--workers", "2", "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not port_open(port):
            assert time.monotonic() < deadline and server.poll() is None, "no server"
            time.sleep(0.1)
        route = {"route": "/api/characters/presets", "status": "200"}
        with httpx.Client(base_url=url, trust_env=False) as client:
            for _ in range(20):
                client.get("/api/characters/presets", headers={"Connection": "close"})
            counts = {
                metric(client.get("/metrics").text, "avatar_http_requests_total", **route)
                for _ in range(6)
            }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    assert counts == {20.0}
