"""A long conversation's first streamed deltas (issue 27, part 1): does any turn wait for a
summary? A 60-turn conversation streamed through the gateway, the Ollama emulator at first
token 0.3 s + 30 tokens/s, LLM_CONTEXT_TOKENS=2048, KEEP_RECENT_TURNS=4. Run twice in the
same run: SUMMARY_AHEAD_RATIO=0 (the baseline: the turn that reaches the trigger summarizes
before it replies) and the default (summaries made in the background after a reply).

Target: the slowest first delta <= 1.5x the turns' p50, with the same number of summary
calls or fewer tokens spent on them than the baseline.

    make bench            (or: uv run python bench/conversation_summaries.py --turns 60)
"""

import argparse
import asyncio
import re
import statistics
import time
import uuid
from dataclasses import dataclass

import httpx
from loadgen import bench_stack, client

from avatar_chat.context.planner import SUMMARY_INSTRUCTIONS
from avatar_chat.settings import ChatSettings
from avatar_devstack.stack import Stack

PERSONA = "A cheerful librarian who remembers every reader's favourite books."
SPEEDS = {"ollama": ["--first-token-latency", "0.3", "--tokens-per-second", "30"]}
SETTINGS = {"LLM_CONTEXT_TOKENS": "2048", "KEEP_RECENT_TURNS": "4"}
MAX_TOKENS = 40  # each reply: 0.3 s + 40 tokens at 30/s
TARGET_RATIO = 1.5
SUMMARY_MARK = SUMMARY_INSTRUCTIONS.split("\n", 1)[0]
SETTLE_S = 1.0  # no new summary call for this long after the last turn: the run is over


@dataclass
class Run:
    label: str
    first_deltas: list[float]  # seconds, per turn
    summary_calls: int
    summary_tokens: int  # prompt and completion, as the chat service counted them

    @property
    def p50(self) -> float:
        return statistics.median(self.first_deltas)

    @property
    def slowest(self) -> float:
        return max(self.first_deltas)


def user_line(i: int) -> str:
    return f"Turn {i}: today my favourite number is {i}, and I would like a book about it please."


async def first_delta(http: httpx.AsyncClient, url: str, body: dict) -> tuple[float, str]:
    """Seconds to the first `delta` event, and the reply's text (from `done`)."""
    started, first, reply = time.perf_counter(), None, None
    async with http.stream("POST", f"{url}/api/chat", json=body) as response:
        response.raise_for_status()
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
                if kind == "delta" and first is None:
                    first = time.perf_counter() - started
            elif line.startswith("data: ") and kind == "done":
                reply = httpx.Response(200, content=line.removeprefix("data: ")).json()
            elif line.startswith("data: ") and kind == "error":
                raise RuntimeError(line)
    assert first is not None and reply is not None, "the stream had no delta or no done"
    return first, reply["content"]


async def summary_calls(http: httpx.AsyncClient, stack: Stack) -> int:
    prompts = (await http.get(f"{stack.emulator_url('ollama')}/_emulator/prompts")).json()
    return sum(p["messages_received"][0]["content"].startswith(SUMMARY_MARK) for p in prompts)


async def summary_tokens(http: httpx.AsyncClient, stack: Stack) -> int:
    text = (await http.get(f"{stack.app_url('chat')}/metrics")).text
    kinds = r'avatar_llm_tokens_total\{[^}]*kind="summary_(?:prompt|completion)"[^}]*\} (\S+)'
    return int(sum(float(value) for value in re.findall(kinds, text)))


async def converse(stack: Stack, label: str, turns: int) -> Run:
    url, session_id = stack.gateway_url, str(uuid.uuid4())
    messages: list[dict[str, str]] = []
    times = []
    async with client() as http:
        # Warm-up: the first request of a stack fills its caches (models, context window).
        warm = {"messages": [{"role": "user", "content": "hello"}], "persona": PERSONA}
        await first_delta(http, url, warm | {"max_tokens": 4, "stream": True})
        for i in range(turns):
            messages.append({"role": "user", "content": user_line(i)})
            body = {
                "messages": messages,
                "persona": PERSONA,
                "session_id": session_id,
                "max_tokens": MAX_TOKENS,
                "tts_enabled": False,
                "stream": True,
            }
            took, reply = await first_delta(http, url, body)
            times.append(took)
            messages.append({"role": "assistant", "content": reply})
        calls = await summary_calls(http, stack)
        while True:  # a summary made after the last reply still counts as spent
            await asyncio.sleep(SETTLE_S)
            now = await summary_calls(http, stack)
            if now == calls:
                break
            calls = now
        tokens = await summary_tokens(http, stack)
    return Run(label, times, calls, tokens)


def measure(ahead: str, label: str, turns: int) -> Run:
    env = {**SETTINGS, "SUMMARY_AHEAD_RATIO": ahead}
    with bench_stack(emulators=True, emulator_args=SPEEDS, env=env) as stack:
        return asyncio.run(converse(stack, label, turns))


def report(run: Run) -> str:
    ratio = run.slowest / run.p50
    met = "met" if ratio <= TARGET_RATIO else "not met"
    slow = sorted(range(len(run.first_deltas)), key=lambda i: -run.first_deltas[i])[:3]
    return (
        f"{run.label}: first delta p50 {run.p50:.2f} s | slowest {run.slowest:.2f} s "
        f"(turns {', '.join(str(i + 1) for i in slow)} slowest) | slowest/p50 {ratio:.1f}x "
        f"(target <= {TARGET_RATIO}x: {met}) | summary calls {run.summary_calls}, "
        f"tokens {run.summary_tokens}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    args = parser.parse_args()
    default = str(ChatSettings.model_fields["summary_ahead_ratio"].default)
    baseline = measure("0", "SUMMARY_AHEAD_RATIO=0 (baseline)", args.turns)
    ahead = measure(default, f"SUMMARY_AHEAD_RATIO={default}", args.turns)
    print(f"a {args.turns}-turn streamed conversation, LLM at 0.3 s + 30 tokens/s, window 2048")
    print(report(baseline))
    print(report(ahead))
    fewer = ahead.summary_calls <= baseline.summary_calls
    cheaper = ahead.summary_tokens <= baseline.summary_tokens
    verdict = "met" if fewer or cheaper else "not met"
    print(
        f"summaries ahead vs baseline: calls {ahead.summary_calls} vs {baseline.summary_calls}, "
        f"tokens {ahead.summary_tokens} vs {baseline.summary_tokens} "
        f"(target: as many calls or fewer tokens: {verdict})"
    )


if __name__ == "__main__":
    main()
