"""Reads of the characters service through the gateway, at 32 concurrent clients, against a
baseline measured in the same run (the edge's `GET /` through the same gateway), and the
Redis commands each request costs (target: presets 0, a user character 1).

    make bench            (or: uv run python bench/characters_read.py --requests 2000)
"""

import argparse
import asyncio

from loadgen import bench_stack, client, row, run_load, timed
from redis.asyncio import Redis

from avatar_devstack.stack import Stack

CLIENTS = 32


async def commands_processed(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_commands_processed"])


async def measure(stack: Stack, requests: int) -> list[str]:
    redis = Redis.from_url(stack.env["REDIS_URL"])
    lines = []
    async with client() as http:
        created = await http.post(
            f"{stack.gateway_url}/api/characters", json={"name": "벤치", "persona": "p"}
        )
        user_character = created.json()["data"]["id"]
        baseline = timed(http, "GET", f"{stack.gateway_url}/")
        await run_load(baseline, 100, CLIENTS)  # warm-up
        base = await run_load(baseline, requests, CLIENTS)
        for label, path in (
            ("presets", "/api/characters/presets"),
            ("preset by id", "/api/characters/hermione"),
            ("user character by id", f"/api/characters/{user_character}"),
        ):
            call = timed(http, "GET", f"{stack.gateway_url}{path}")
            await run_load(call, 100, CLIENTS)
            before = await commands_processed(redis)
            samples = await run_load(call, requests, CLIENTS)
            # One INFO of ours is counted too; health checks add a few more at most.
            per_request = (await commands_processed(redis) - before - 1) / requests
            lines.append(
                f"{row(label, CLIENTS, base, samples, 'GET /')} | redis {per_request:.2f}/req"
            )
    await redis.aclose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    args = parser.parse_args()
    with bench_stack(emulators=False) as stack:
        lines = asyncio.run(measure(stack, args.requests))
    print(f"characters reads through the gateway; {args.requests} requests per row; ms")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
