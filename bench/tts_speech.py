"""Speech benchmarks through the gateway, each against a baseline from the same run.

1. Time to first audio with realistic upstream speeds (LLM 30 tokens/s, GPT-SoVITS real-time
   factor 0.3): the time until the first audio bytes (PCM, past the WAV header) of a streamed
   chat's first spoken clause reach the client, from its `audio_url`. Against the
   first-sentence limit, derived from the emulators' pace: the LLM writing the reply's first
   sentence, then GPT-SoVITS making that sentence's whole audio. Three ways, side by side:
   - GPT-SoVITS streaming (`tts_streaming_mode` 2): the audio event comes once the stream has
     begun, and the audio_url serves the audio as it is made. Target: <= 0.5x the limit.
   - as before (`tts_streaming_mode` 0): the audio event once the clause's file is whole
     (also timed to the event itself, as this bench measured before).
   - sequential: the whole reply, then speech of the whole reply. Target: the streamed first
     audio >= 3x sooner.
2. A cache-hit `POST /api/tts` at 1 and 32 concurrent clients, against `GET /` (target at 32:
   p50 <= 5 ms over `GET /`'s).

    make bench            (or: uv run python bench/tts_speech.py)
"""

import argparse
import asyncio
import json
import re
import statistics
import time

import httpx
from loadgen import RawClient, bench_stack, client, percentile, row, throughput
from redis.asyncio import Redis

from avatar_devstack.stack import Stack
from avatar_emulators.gpt_sovits import GptSovitsConfig, audio_duration_s

PERSONA = "차분하고 친절한 사서. 존댓말을 쓴다."
TOKENS_PER_S, REAL_TIME_FACTOR = 30.0, 0.3
SPEEDS = {
    "ollama": ["--tokens-per-second", str(TOKENS_PER_S)],
    "gpt-sovits": ["--real-time-factor", str(REAL_TIME_FACTOR)],
}
STREAMED_MODE = 2  # GPT-SoVITS's streaming at medium quality (3: fixed chunks, lower quality)
SENTENCE_END = re.compile(r"[.!?]+(?=\s)")


def chat_body(text: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": text}], "persona": PERSONA, **extra}


def first_sentence_limit(reply: str) -> float:
    """When the first sentence would be heard if it were spoken whole: the LLM emulator's
    tokens (one per word, the first at once) up to the one after the sentence (the splitter
    sees its end there), then GPT-SoVITS making all of its audio at the real-time factor."""
    end = SENTENCE_END.search(reply)
    sentence = reply[: end.end()] if end else reply
    words = len(sentence.split())
    synthesis = REAL_TIME_FACTOR * audio_duration_s(sentence, 1.0, GptSovitsConfig())
    return words / TOKENS_PER_S + synthesis


async def first_pcm(http: httpx.AsyncClient, url: str, audio_url: str) -> None:
    """Returns once the first audio bytes past the WAV header have arrived."""
    async with http.stream("GET", f"{url}{audio_url}") as response:
        response.raise_for_status()
        head = b""
        async for chunk in response.aiter_bytes():
            head += chunk
            data = head.find(b"data")
            if data >= 0 and len(head) > data + 8:
                return
    raise AssertionError(f"no audio at {audio_url}")


async def first_audio_streamed(
    http: httpx.AsyncClient, url: str, text: str, streaming_mode: int
) -> tuple[float, float]:
    """(time to the first audio event, time to the first audio bytes of its audio_url)."""
    started = time.perf_counter()
    body = chat_body(text, stream=True, tts_mode="realtime", tts_streaming_mode=streaming_mode)
    audio_url = None
    async with http.stream("POST", f"{url}/api/chat", json=body) as response:
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif kind == "audio" and line.startswith("data: "):
                audio_url = json.loads(line[6:])["audio_url"]
                break
    event = time.perf_counter() - started
    assert audio_url, "the first sentence was not spoken"
    await first_pcm(http, url, audio_url)
    return event, time.perf_counter() - started


async def first_audio_sequential(http: httpx.AsyncClient, url: str, text: str) -> tuple[float, str]:
    """(time to the first audio bytes, the reply)."""
    started = time.perf_counter()
    reply = await http.post(f"{url}/api/chat", json=chat_body(text, tts_enabled=False))
    content = reply.json()["data"]["content"]
    speech = await http.post(f"{url}/api/tts", json={"text": content})
    speech.raise_for_status()
    await first_pcm(http, url, speech.json()["data"]["audio_url"])
    return time.perf_counter() - started, content


async def forget_speech(redis: Redis) -> None:
    keys = [key async for key in redis.scan_iter("tts:*")]
    if keys:
        await redis.delete(*keys)


async def measure(stack: Stack, runs: int, seconds: float) -> list[str]:
    url = stack.gateway_url
    lines = []
    async with client() as http:
        # The emulator's replies share their opening words: forget all speech before each run
        # so that no path is helped by the cache.
        redis = Redis.from_url(stack.env["REDIS_URL"])
        streamed, before, before_event, sequential, limits = [], [], [], [], []
        for i in range(runs):
            await forget_speech(redis)
            streamed.append(
                (await first_audio_streamed(http, url, f"이야기 {i}", STREAMED_MODE))[1]
            )
            await forget_speech(redis)
            event, heard = await first_audio_streamed(http, url, f"이야기 {i}번", 0)
            before_event.append(event)
            before.append(heard)
            await forget_speech(redis)
            seconds, reply = await first_audio_sequential(http, url, f"이야기 {i}번 부탁해요")
            sequential.append(seconds)
            limits.append(first_sentence_limit(reply))
        await redis.aclose()
        limit = statistics.median(limits)
        s50, b50, q50 = (statistics.median(t) for t in (streamed, before, sequential))
        met = "met" if s50 <= 0.5 * limit else "NOT met"
        lines += [
            f"time to first audio bytes ({runs} runs, p50) against the first-sentence limit "
            f"{limit:.2f} s (the LLM writing the first sentence, then its whole speech):",
            f"  GPT-SoVITS streaming (mode {STREAMED_MODE}), audio served as it is made: "
            f"{s50:.2f} s = {s50 / limit:.2f}x the limit | target <= 0.5x: {met} | "
            f"runs (s): {[round(t, 2) for t in streamed]}",
            f"  as before (mode 0), audio event once the clause's file is whole: {b50:.2f} s "
            f"(event {statistics.median(before_event):.2f} s) = {b50 / limit:.2f}x the limit | "
            f"runs (s): {[round(t, 2) for t in before]}",
            f"  sequential (whole reply, then its speech): {q50:.2f} s | streamed "
            f"{q50 / s50:.1f}x sooner | target >= 3x: {'met' if q50 >= 3 * s50 else 'NOT met'}",
        ]
        # The lean keep-alive client (httpx's own CPU at 32 clients outweighed what it
        # measured), as this visitor: its cookie.
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        body = {"text": "캐시된 문장입니다."}
        await throughput(speaking(url, body, cookie, 32), 1.0)  # fills the cache, warms up
        for clients in (1, 32):
            home = [RawClient(f"{url}/", "GET", cookie=cookie) for _ in range(clients)]
            _, base = await throughput(home, seconds)
            _, hits = await throughput(speaking(url, body, cookie, clients), seconds)
            lines.append(row("tts cache hit", clients, base, hits, "GET /"))
        over = (percentile(hits, 50) - percentile(base, 50)) * 1000
        lines.append(
            f"cache hit at 32 clients: p50 {over:.2f} ms over GET / | target <= 5 ms: "
            f"{'met' if over <= 5 else 'NOT met'}"
        )
    return lines


def speaking(url: str, body: dict, cookie: str, clients: int) -> list[RawClient]:
    return [RawClient(f"{url}/api/tts", "POST", body, cookie=cookie) for _ in range(clients)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="chats per time-to-audio path")
    parser.add_argument("--seconds", type=float, default=3, help="per cache-hit measurement")
    args = parser.parse_args()
    with bench_stack(emulators=True, emulator_args=SPEEDS) as stack:
        lines = asyncio.run(measure(stack, args.runs, args.seconds))
    print("speech through the gateway")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
