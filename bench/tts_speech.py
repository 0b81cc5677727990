"""Speech benchmarks through the gateway, each against a baseline from the same run.

1. Time to first audio with realistic upstream speeds (LLM 30 tokens/s, GPT-SoVITS real-time
   factor 0.3): a streamed chat that speaks sentence by sentence, against the sequential path
   (the whole reply, then speech of the whole reply). Target: first audio >= 3x sooner.
2. A cache-hit `POST /api/tts` at 32 concurrent clients, against `GET /` (target p50 <= 5 ms).

    make bench            (or: uv run python bench/tts_speech.py)
"""

import argparse
import asyncio
import json
import statistics
import time

import httpx
from loadgen import bench_stack, client, row, run_load, timed
from redis.asyncio import Redis

from avatar_devstack.stack import Stack

PERSONA = "차분하고 친절한 사서. 존댓말을 쓴다."
SPEEDS = {"ollama": ["--tokens-per-second", "30"], "gpt-sovits": ["--real-time-factor", "0.3"]}


def chat_body(text: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": text}], "persona": PERSONA, **extra}


async def first_audio_streamed(http: httpx.AsyncClient, url: str, text: str) -> float:
    started = time.perf_counter()
    body = chat_body(text, stream=True, tts_mode="realtime")
    async with http.stream("POST", f"{url}/api/chat", json=body) as response:
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif kind == "audio" and line.startswith("data: "):
                assert json.loads(line[6:])["audio_url"], "the first sentence was not spoken"
                return time.perf_counter() - started
    raise AssertionError("no audio event")


async def first_audio_sequential(http: httpx.AsyncClient, url: str, text: str) -> float:
    started = time.perf_counter()
    reply = await http.post(f"{url}/api/chat", json=chat_body(text, tts_enabled=False))
    speech = await http.post(f"{url}/api/tts", json={"text": reply.json()["data"]["content"]})
    speech.raise_for_status()
    return time.perf_counter() - started


async def forget_speech(redis: Redis) -> None:
    keys = [key async for key in redis.scan_iter("tts:*")]
    if keys:
        await redis.delete(*keys)


async def measure(stack: Stack, runs: int, requests: int) -> list[str]:
    url = stack.gateway_url
    lines = []
    async with client() as http:
        # The emulator's replies share their opening words: forget all speech before each run
        # so that neither path is helped by the cache.
        redis = Redis.from_url(stack.env["REDIS_URL"])
        streamed, sequential = [], []
        for i in range(runs):
            await forget_speech(redis)
            streamed.append(await first_audio_streamed(http, url, f"이야기 {i}번 해주세요"))
            await forget_speech(redis)
            sequential.append(await first_audio_sequential(http, url, f"이야기 {i}번 부탁해요"))
        await redis.aclose()
        s50, q50 = statistics.median(streamed), statistics.median(sequential)
        lines.append(
            f"time to first audio ({runs} runs): sentence-streamed p50 {s50:.2f} s | "
            f"sequential p50 {q50:.2f} s | {q50 / s50:.1f}x sooner | "
            f"runs (s): {[round(t, 2) for t in streamed]} vs {[round(t, 2) for t in sequential]}"
        )
        speak = timed(http, "POST", f"{url}/api/tts", {"text": "캐시된 문장입니다."})
        await run_load(speak, 50, 32)  # the first call fills the cache
        for clients in (1, 32):
            base = await run_load(timed(http, "GET", f"{url}/"), requests, clients)
            hits = await run_load(speak, requests, clients)
            lines.append(row("tts cache hit", clients, base, hits, "GET /"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="chats per time-to-audio path")
    parser.add_argument("--requests", type=int, default=1000, help="cache-hit requests")
    args = parser.parse_args()
    with bench_stack(emulators=True, emulator_args=SPEEDS) as stack:
        lines = asyncio.run(measure(stack, args.runs, args.requests))
    print("speech through the gateway")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
