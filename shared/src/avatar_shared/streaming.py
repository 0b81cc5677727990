"""Streamed responses: a stream started before the response is, and server-sent events.

A streamed response cannot change its status once its first byte is out, so a stream is
started first (`primed`): whatever fails before its first item (bad input, an upstream that is
down) is still an ordinary error response."""

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

import orjson

T = TypeVar("T")

# Proxies must pass events on at once rather than collect them.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def primed(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`items` once its first item has come (a failure before it raises here). Closing the
    result closes `items`, and with it whatever `items` holds."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        return _nothing()
    return _chained(first, items)


async def _chained(first: T, rest: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _nothing() -> AsyncGenerator[T, None]:
    return
    yield  # an async generator that ends at once


def sse(event: str, data: object) -> bytes:
    """One server-sent event whose data is JSON (UTF-8, compact). orjson: a streamed reply
    sends one event per delta, and the stdlib's encoder cost twelve times as much (2.8 us an
    event against 0.23)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
