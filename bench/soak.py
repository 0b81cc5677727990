"""A bounded soak: simulated users (default 200) for a while (default 2 minutes) through the
gateway, with the upstream emulators at realistic speeds (the LLM's first token after 0.3 s,
then 30 tokens/s, up to 64 calls at once as a batching server takes them; speech at a fifth
of real time; 3D after 3 s). Each user keeps its own cookies (its own anonymous identity)
and, after a pause of 2-6 s, does one of the things a user of the frontend does: browse
presets, chat (keeping its session), speak a sentence, fetch its audio, list or make
characters, look at a 3D job. `GET /` is the baseline, sent along at the same rate. Prints
p50/p99 per endpoint and the ratio to `GET /` measured in the same run, errors by kind, and
each process's RSS after the warm-up and at the end (target: growth < 10%).

    make bench            (or: uv run python bench/soak.py --users 200 --seconds 120)
"""

import argparse
import asyncio
import random
import time
from collections import Counter, defaultdict

import httpx
from loadgen import bench_stack, percentile, rss_by_service

from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.stack import Stack

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
REALISTIC = {
    "ollama": ["--first-token-latency", "0.3", "--tokens-per-second", "30"],
    "gpt-sovits": ["--first-token-latency", "0.2", "--real-time-factor", "0.2"],
    "hunyuan3d": ["--first-token-latency", "3"],
}
CARD_PNG = REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"
WARM_UP_S = 30
WARM_UP_JOBS = 24  # the 3D worker's memory settles after a few dozen jobs (numpy, PIL)


class User:
    """One simulated frontend user: its own client (cookies), session and files."""

    def __init__(self, base: str, samples: dict, errors: Counter) -> None:
        self.http = httpx.AsyncClient(base_url=base, trust_env=False, timeout=60)
        self.samples, self.errors = samples, errors
        self.session_id: str | None = None
        self.audio_url: str | None = None
        self.job_id: str | None = None

    async def call(self, name: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.errors[(name, type(exc).__name__)] += 1
            return None
        self.samples[name].append(time.perf_counter() - started)
        if response.status_code >= 400:
            code = response.json().get("error", {}).get("code", "") if _json(response) else ""
            self.errors[(name, f"{response.status_code} {code}")] += 1
        return response

    async def act(self) -> None:
        action = random.choices(
            [self.browse, self.chat, self.speak, self.listen, self.own, self.create, self.look],
            weights=[25, 30, 15, 10, 10, 5, 5],
        )[0]
        await action()
        await self.call("GET /", "GET", "/")  # the baseline, at the same rate

    async def browse(self) -> None:
        await self.call("GET /api/characters/presets", "GET", "/api/characters/presets")

    async def chat(self) -> None:
        body = {
            "messages": [{"role": "user", "content": "안녕! 오늘 뭐 했어?"}],
            "character_id": random.choice(["hermione", "sherlock"]),
            "tts_enabled": False,
            "max_tokens": 64,
            **({"session_id": self.session_id} if self.session_id else {}),
        }
        response = await self.call("POST /api/chat", "POST", "/api/chat", json=body)
        if response is not None and response.is_success:
            self.session_id = response.json()["data"]["session_id"]

    async def speak(self) -> None:
        text = random.choice(["안녕하세요, 반갑습니다!", "오늘 날씨가 좋네요.", "또 만나요."])
        response = await self.call("POST /api/tts", "POST", "/api/tts", json={"text": text})
        if response is not None and response.is_success:
            self.audio_url = response.json()["data"]["audio_url"]

    async def listen(self) -> None:
        if self.audio_url:
            await self.call("GET audio", "GET", self.audio_url)

    async def own(self) -> None:
        await self.call("GET /api/characters", "GET", "/api/characters?limit=20")

    async def create(self) -> None:
        body = {"name": "나만의 캐릭터", "persona": PERSONA}
        await self.call("POST /api/characters", "POST", "/api/characters", json=body)

    async def look(self) -> None:
        if self.job_id is None and random.random() < 0.2:
            files = {"image": ("card.png", CARD_PNG.read_bytes(), "image/png")}
            response = await self.call("POST /api/generate", "POST", "/api/generate", files=files)
            if response is not None and response.is_success:
                self.job_id = response.json()["data"]["job_id"]
        elif self.job_id:
            path = f"/api/generate/status/{self.job_id}"
            await self.call("GET /api/generate/status", "GET", path)

    async def run(self, until: float) -> None:
        async with self.http:
            while time.monotonic() < until:
                await asyncio.sleep(random.uniform(2, 6))
                await self.act()


def _json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


async def warm_up_3d(stack: Stack) -> None:
    """Jobs before the crowd, so the worker's RSS is measured from where it settles."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False, timeout=60) as http:
        for _ in range(WARM_UP_JOBS // 4):
            jobs = [
                await http.post("/api/generate", files={"image": ("a.png", CARD_PNG.read_bytes())})
                for _ in range(4)
            ]
            for job in jobs:
                await finished(http, job.json()["data"]["job_id"])


async def finished(http: httpx.AsyncClient, job_id: str) -> None:
    for _ in range(600):  # a minute at most
        status = (await http.get(f"/api/generate/status/{job_id}")).json()["data"]["status"]
        if status in ("completed", "failed"):
            return
        await asyncio.sleep(0.1)


async def soak(stack: Stack, users: int, seconds: float) -> list[str]:
    await warm_up_3d(stack)
    samples: dict[str, list[float]] = defaultdict(list)
    errors: Counter = Counter()
    until = time.monotonic() + WARM_UP_S + seconds
    crowd = [User(stack.gateway_url, samples, errors) for _ in range(users)]
    running = asyncio.gather(*(user.run(until) for user in crowd))
    await asyncio.sleep(WARM_UP_S)
    start_rss = rss_by_service(stack)
    samples.clear()
    errors.clear()
    await running
    end_rss = rss_by_service(stack)
    return report(samples, errors, start_rss, end_rss, users, seconds)


def report(samples, errors, start_rss, end_rss, users, seconds) -> list[str]:
    base = samples["GET /"]
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    lines = [f"soak: {users} users, {seconds:.0f} s after a {WARM_UP_S} s warm-up; ms"]
    for name, values in sorted(samples.items(), key=lambda item: -len(item[1])):
        if len(values) < 2:
            continue
        m50, m99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        lines.append(
            f"{name:<28}{len(values):>6}  p50 {m50:8.2f} p99 {m99:8.2f} | GET / p50 {b50:6.2f} "
            f"p99 {b99:6.2f} | ratio p50 {m50 / b50:7.1f}x p99 {m99 / b99:7.1f}x"
        )
    total = sum(len(v) for v in samples.values())
    lines.append(f"errors: {sum(errors.values())} of {total} requests")
    lines += [f"  {name}: {kind} x{count}" for (name, kind), count in errors.most_common()]
    lines.append("RSS per process (MiB): after warm-up -> end (growth; target < 10%)")
    for name in sorted(start_rss):
        before, after = start_rss[name] / 1024, end_rss.get(name, 0) / 1024
        growth = (after - before) / before * 100
        verdict = "ok" if growth < 10 else "OVER"
        lines.append(f"  {name:<16}{before:7.1f} -> {after:7.1f}  {growth:+5.1f}%  {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    # Realistic limits, but room for 200 users' sessions at once (the default is 20), an LLM
    # server that batches 64 calls, and the warm-up's 3D jobs.
    env = {
        "MAX_CONCURRENT_USERS": "1000",
        "CHAT_RATE_PER_MIN": "30",
        "LLM_MAX_IN_FLIGHT": "64",
        "MAX_QUEUED_JOBS_PER_USER": str(WARM_UP_JOBS),
    }
    with bench_stack(emulators=True, emulator_args=REALISTIC, env=env) as stack:
        print("\n".join(asyncio.run(soak(stack, args.users, args.seconds))))


if __name__ == "__main__":
    main()
