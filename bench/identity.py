"""What knowing the caller costs per request, each against a baseline from the same run.

1. In process: verifying an access token (RS256 signature and claims) against checking an
   anonymous cookie (HMAC-SHA256), p50/p99 in µs.
2. Through the gateway, one client: `GET /api/characters?limit=1` signed in (a bearer token:
   its verification plus the revocation check) against the same request as an anonymous
   visitor with a cookie; and the Redis commands each request makes (from Redis's own
   counter), so the round trips identity adds are counted, not assumed.

    make bench            (or: uv run python bench/identity.py)
"""

import argparse
import asyncio
import os
import time
from pathlib import Path

import httpx
from loadgen import bench_stack, client, percentile, row
from redis.asyncio import Redis

from avatar_shared.identity import ANON_COOKIE, AnonymousIds
from avatar_shared.tokens import LocalKeys, SigningKeys, TokenVerifier, read_key_set

ISSUER, AUDIENCE = "avatar-forge-auth", "avatar-forge"


def micro(samples: int) -> list[str]:
    keys = read_key_set(Path(os.environ["SIGNING_KEYS_FILE"]))
    token = SigningKeys(keys, ISSUER, AUDIENCE, 3600).issue("bench-user")
    verifier = TokenVerifier(LocalKeys(keys), ISSUER, AUDIENCE)
    anonymous = AnonymousIds(os.environ["ANON_ID_SECRET"].encode())
    _, cookie = anonymous.mint()

    def sample(call) -> list[float]:
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            call()
            timings.append((time.perf_counter() - started) * 1e6)
        return timings

    base = sample(lambda: anonymous.verify(cookie))
    measured = sample(lambda: _sync(verifier, token))
    b50, m50 = percentile(base, 50), percentile(measured, 50)
    return [
        f"anonymous cookie check (HMAC)   p50 {b50:7.1f} µs  p99 {percentile(base, 99):7.1f} µs",
        f"access token check (RS256)      p50 {m50:7.1f} µs  p99 {percentile(measured, 99):7.1f} µs"
        f"  ratio p50 {m50 / b50:.0f}x",
    ]


def _sync(verifier: TokenVerifier, token: str) -> None:
    """verify() only awaits the key lookup, which is local here: run the coroutine by hand."""
    coroutine = verifier.verify(token)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("verify suspended")


async def commands_per_request(redis: Redis, http: httpx.AsyncClient, url: str, n: int) -> float:
    before = (await redis.info("stats"))["total_commands_processed"]
    for _ in range(n):
        (await http.get(url)).raise_for_status()
    after = (await redis.info("stats"))["total_commands_processed"]
    return (after - before - 2) / n  # minus the two INFO calls themselves


async def through_gateway(stack, requests: int) -> list[str]:
    keys = read_key_set(Path(stack.env["SIGNING_KEYS_FILE"]))
    token = SigningKeys(keys, ISSUER, AUDIENCE, 3600).issue("bench-user")
    _, cookie = AnonymousIds(stack.env["ANON_ID_SECRET"].encode()).mint()
    url = f"{stack.gateway_url}/api/characters?limit=1"
    redis = Redis.from_url(stack.env["REDIS_URL"])
    async with client() as anon, client() as signed:
        anon.cookies.set(ANON_COOKIE, cookie)
        signed.headers["Authorization"] = f"Bearer {token}"
        for http in (anon, signed):  # warm up: connections, the JWKS fetch
            for _ in range(50):
                (await http.get(url)).raise_for_status()
        timings: dict[str, list[float]] = {"anon": [], "signed": []}
        for _ in range(requests):  # interleaved, so drift hits both alike
            for name, http in (("anon", anon), ("signed", signed)):
                started = time.perf_counter()
                (await http.get(url)).raise_for_status()
                timings[name].append(time.perf_counter() - started)
        anon_cmds = await commands_per_request(redis, anon, url, 200)
        signed_cmds = await commands_per_request(redis, signed, url, 200)
    await redis.aclose()
    return [
        row("signed-in GET", 1, timings["anon"], timings["signed"], "anonymous"),
        f"redis commands per request: anonymous {anon_cmds:.2f}, signed in {signed_cmds:.2f} "
        f"(added {signed_cmds - anon_cmds:.2f}: the revocation check)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with bench_stack(emulators=False) as stack:
        os.environ.setdefault("SIGNING_KEYS_FILE", stack.env["SIGNING_KEYS_FILE"])
        os.environ.setdefault("ANON_ID_SECRET", stack.env["ANON_ID_SECRET"])
        lines = micro(5000) + asyncio.run(through_gateway(stack, args.requests))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
