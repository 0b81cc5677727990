"""Conversations kept on the server (issue 26), through the gateway, each against a baseline
measured in the same run:

1. one chat turn on a 200-message conversation, c=1: sent as `session_id` + `message` (the
   server reads the conversation from Redis) against the same turn sent as `messages` (the
   client sends all 201). The emulator answers at once. After each server turn its two new
   messages are deleted (not timed), so every sample is a 200-message conversation.
2. listing conversations: `GET /api/chat/sessions?limit=20` for a caller with 1,000 of them,
   against `GET /api/characters?limit=20` (the same caller's 20 characters), at 32 clients.
   Target: p99 <= 2x the characters listing's.

    make bench            (or: uv run python bench/conversations.py --requests 500)
"""

import argparse
import asyncio
import json
import time

import httpx
from loadgen import bench_stack, client, percentile, row, run_load, timed

from avatar_devstack.stack import Stack

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
LENGTH = 200  # messages in the conversation of part 1
CONVERSATIONS = 1000  # of one caller, part 2
CLIENTS = 32
TARGET_LIST_RATIO = 2.0


def sillytavern_chat(messages: int) -> bytes:
    """A chat file of `messages` short turns (no summary is due: they fit the window)."""
    lines = [
        {"user_name": "User", "character_name": "Hermione", "create_date": "2026-12-06@07h00m00s"}
    ]
    for n in range(messages):
        user = n % 2 == 0
        text = (
            f"{'질문' if user else '대답'} {n}: 오늘 도서관에서 무슨 책을 읽었는지 이야기해 줄래?"
        )
        lines.append({"name": "User" if user else "Hermione", "is_user": user, "mes": text})
    return "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()


async def turns(stack: Stack, http: httpx.AsyncClient, requests: int) -> str:
    base = stack.gateway_url
    files = {"file": ("chat.jsonl", sillytavern_chat(LENGTH - 1), "application/jsonl")}
    imported = await http.post(
        f"{base}/api/chat/sessions/import", files=files, data={"character_id": "hermione"}
    )
    imported.raise_for_status()
    session = imported.json()["data"]["session_id"]
    history = (await http.get(f"{base}/api/chat/sessions/{session}?limit=200")).json()["data"]
    sent = [{"role": m["role"], "content": m["content"]} for m in history["messages"]]
    said = "그럼 내일은 뭐 할 거야?"
    server_turn = {"session_id": session, "message": said, "tts_enabled": False}
    client_turn = {
        "messages": [*sent, {"role": "user", "content": said}],
        "character_id": "hermione",
        "tts_enabled": False,
    }

    async def on_server() -> float:
        started = time.perf_counter()
        answer = await http.post(f"{base}/api/chat", json=server_turn)
        elapsed = time.perf_counter() - started
        answer.raise_for_status()
        data = answer.json()["data"]
        for message_id in (data["message_id"], data["user_message_id"]):
            path = f"{base}/api/chat/sessions/{session}/messages/{message_id}"
            (await http.delete(path)).raise_for_status()
        return elapsed

    as_messages = timed(http, "POST", f"{base}/api/chat", client_turn)
    await run_load(as_messages, 20, 1)  # warm-up
    await run_load(on_server, 20, 1)
    baseline = await run_load(as_messages, requests, 1)
    measured = await run_load(on_server, requests, 1)
    return row("turn, 200 messages", 1, baseline, measured, "messages")


async def listing(stack: Stack, http: httpx.AsyncClient, requests: int) -> tuple[str, bool]:
    base = stack.gateway_url
    for n in range(20):
        made = await http.post(f"{base}/api/characters", json={"name": f"벤치 {n}", "persona": "p"})
        made.raise_for_status()
    start = {"character_id": "hermione", "title": "벤치"}
    for _ in range(CONVERSATIONS // 50):
        made = await asyncio.gather(
            *(http.post(f"{base}/api/chat/sessions", json=start) for _ in range(50))
        )
        for answer in made:
            answer.raise_for_status()
    characters = timed(http, "GET", f"{base}/api/characters?limit=20")
    conversations = timed(http, "GET", f"{base}/api/chat/sessions?limit=20")
    await run_load(characters, 100, CLIENTS)
    await run_load(conversations, 100, CLIENTS)
    baseline = await run_load(characters, requests, CLIENTS)
    measured = await run_load(conversations, requests, CLIENTS)
    ratio = percentile(measured, 99) / percentile(baseline, 99)
    line = row(f"list of {CONVERSATIONS}", CLIENTS, baseline, measured, "characters")
    return line, ratio <= TARGET_LIST_RATIO


async def measure(stack: Stack, requests: int) -> list[str]:
    async with client() as http:
        # One caller (one anonymous cookie) throughout.
        (await http.get(f"{stack.gateway_url}/api/characters")).raise_for_status()
        turn = await turns(stack, http, requests)
        listed, met = await listing(stack, http, requests)
    verdict = "met" if met else "NOT met"
    return [turn, listed, f"target: list p99 <= {TARGET_LIST_RATIO}x characters p99: {verdict}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    args = parser.parse_args()
    # The caller's conversations: 1,000 of them, kept (an anonymous caller's, here).
    env = {"MAX_STORED_SESSIONS_PER_USER": "100000", "SESSION_TTL_S": "3600"}
    with bench_stack(emulators=True, env=env) as stack:
        lines = asyncio.run(measure(stack, args.requests))
    print(f"conversations kept on the server; {args.requests} requests per row; ms")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
