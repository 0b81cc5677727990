"""The shared pieces services build on, each against real parts: a peer service served over
real HTTP, a real Redis for the lock."""

import asyncio
import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from avatar_chat.errors import LlmError, LlmTimeout, LlmUnavailable
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.envelope import ErrorEnvelope
from avatar_shared.errors import (
    JSON_BODY,
    NamedNotFound,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    error_responses,
)
from avatar_shared.locks import LockTimeout, redis_lock
from avatar_shared.pages import INDEX, TIME, TIME_AND_ID, Page
from avatar_shared.peers import PeerClient, PeerRejected, PeerUnavailable
from avatar_shared.streaming import primed
from avatar_shared.ttl_cache import KeyedTtlCache, TtlCache
from avatar_tts.errors import TtsError, TtsTimeout, TtsUnavailable


def peer_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict:
        return {"success": True, "data": {"id": "hermione"}}

    @app.get("/missing")
    async def missing() -> JSONResponse:
        body = {"success": False, "error": {"code": "thing_not_found", "message": "No thing."}}
        return JSONResponse(body, status_code=404)

    @app.get("/broken")
    async def broken() -> PlainTextResponse:
        return PlainTextResponse("database on fire", status_code=500)

    @app.get("/not-an-envelope")
    async def not_an_envelope() -> dict:
        return {"id": "hermione"}

    @app.get("/slow")
    async def slow() -> dict:
        await asyncio.sleep(5)
        return {"success": True, "data": None}

    return app


@pytest.fixture(scope="module")
def peer_url():
    with serve_in_thread(peer_app()) as url:
        yield url


async def call(url: str, path: str, timeout_s: float = 2.0) -> object:
    async with httpx.AsyncClient(trust_env=False) as http:
        return await PeerClient(http, "things", url, timeout_s=timeout_s).get(path)


async def test_a_peer_answer_is_unwrapped(peer_url):
    assert await call(peer_url, "/ok") == {"id": "hermione"}


async def test_a_peer_refusal_keeps_its_status_code_and_message(peer_url):
    with pytest.raises(PeerRejected) as refused:
        await call(peer_url, "/missing")
    error = refused.value
    assert (error.status_code, error.code, error.message) == (404, "thing_not_found", "No thing.")


@pytest.mark.parametrize(
    ("path", "says"),
    [("/broken", "answered 500: database on fire"), ("/not-an-envelope", "malformed answer")],
)
async def test_a_failing_peer_is_a_503_naming_it(peer_url, path, says):
    with pytest.raises(PeerUnavailable) as failed:
        await call(peer_url, path)
    assert (failed.value.status_code, failed.value.code) == (503, "things_unavailable")
    assert says in failed.value.message and "things service" in failed.value.message


async def test_an_unreachable_or_slow_peer_fails_within_the_timeout(peer_url):
    with pytest.raises(PeerUnavailable, match="unreachable"):
        await call(f"http://127.0.0.1:{free_port()}", "/ok")
    started = asyncio.get_running_loop().time()
    with pytest.raises(PeerUnavailable, match="did not answer in time"):
        await call(peer_url, "/slow", timeout_s=0.3)
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_lock_is_held_for_its_block_only(redis):
    async with redis_lock(redis, "test:lock", expire_s=10, wait_s=0):
        with pytest.raises(LockTimeout):
            async with redis_lock(redis, "test:lock", expire_s=10, wait_s=0.2):
                pass
    async with redis_lock(redis, "test:lock", expire_s=10, wait_s=0):
        assert await redis.exists("test:lock")
    assert not await redis.exists("test:lock")


async def test_a_waiter_gets_the_lock_when_the_holder_leaves(redis):
    order = []

    async def holder() -> None:
        async with redis_lock(redis, "test:lock", expire_s=10, wait_s=0):
            await asyncio.sleep(0.3)
            order.append("holder done")

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    async with redis_lock(redis, "test:lock", expire_s=10, wait_s=5):
        order.append("waiter in")
    await task
    assert order == ["holder done", "waiter in"]


async def test_a_dead_holders_lock_expires(redis):
    lock = redis.lock("test:lock", timeout=0.3)
    assert await lock.acquire(blocking=False)  # and never released, as by a crashed replica
    async with redis_lock(redis, "test:lock", expire_s=10, wait_s=2):
        pass


async def test_a_cached_value_is_computed_once_for_concurrent_callers():
    calls = []

    async def compute() -> tuple[int, float]:
        calls.append(1)
        await asyncio.sleep(0.05)
        return len(calls), 60.0

    cache = TtlCache(compute)
    assert await asyncio.gather(*(cache.get() for _ in range(5))) == [1] * 5
    assert len(calls) == 1


async def test_concurrent_callers_share_one_failure_and_the_next_call_tries_again():
    calls = []

    async def compute() -> tuple[int, float]:
        calls.append(1)
        await asyncio.sleep(0.05)
        if len(calls) == 1:
            raise ConnectionError("the server is down")
        return len(calls), 60.0

    cache = TtlCache(compute)
    results = await asyncio.gather(*(cache.get() for _ in range(5)), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 5 and len(calls) == 1
    assert await cache.get() == 2


async def test_a_keyed_cache_stays_within_its_size_and_expires_entries():
    computed: list[str] = []
    cache: KeyedTtlCache[str, str] = KeyedTtlCache(max_entries=2)

    async def get(key: str, ttl_s: float = 60.0) -> str:
        async def compute() -> tuple[str, float]:
            computed.append(key)
            return key.upper(), ttl_s

        return await cache.get(key, compute)

    assert [await get("a"), await get("b"), await get("a")] == ["A", "B", "A"]
    await get("c")  # evicts b, the least recently used
    await get("a")
    await get("b")
    assert computed == ["a", "b", "c", "b"]
    await get("z", ttl_s=0)
    await get("z", ttl_s=0)
    assert computed[-2:] == ["z", "z"]  # expired at once: computed again


async def test_a_keyed_value_forgotten_is_computed_again_even_while_it_was_being_read():
    """A change announced while the old value is being fetched must not leave that old value
    cached: it is answered to the caller that asked, and fetched again by the next."""
    versions: list[int] = []
    cache: KeyedTtlCache[str, int] = KeyedTtlCache(max_entries=4)

    async def compute() -> tuple[int, float]:
        versions.append(len(versions) + 1)
        if len(versions) == 1:
            cache.forget("k")  # the change lands while the first read is under way
        return versions[-1], 60.0

    assert await cache.get("k", compute) == 1
    assert await cache.get("k", compute) == 2
    assert await cache.get("k", compute) == 2  # kept, now
    cache.forget("k")
    assert await cache.get("k", compute) == 3
    cache.clear()
    assert await cache.get("k", compute) == 4


@pytest.mark.parametrize(
    ("errors", "prefix", "server"),
    [
        ((LlmUnavailable, LlmTimeout, LlmError), "llm", "The language model server"),
        ((TtsUnavailable, TtsTimeout, TtsError), "tts", "The speech server"),
    ],
)
def test_an_upstreams_errors_carry_the_statuses_and_codes_of_the_envelope(errors, prefix, server):
    unavailable, timeout, failed = errors
    assert [(e.status_code, e.code) for e in errors] == [
        (503, f"{prefix}_unavailable"),
        (504, f"{prefix}_timeout"),
        (502, f"{prefix}_error"),
    ]
    assert issubclass(unavailable, ServiceUnavailable)
    assert issubclass(timeout, UpstreamTimeout) and issubclass(failed, UpstreamError)
    assert unavailable().message == f"{server} is unreachable."
    assert timeout().message == f"{server} did not answer in time."
    assert failed().message == f"{server} failed."


class ThingNotFound(NamedNotFound):
    code, what = "thing_not_found", "Thing"


def test_error_responses_list_each_status_once_with_its_codes():
    responses = error_responses(
        JSON_BODY, NotFound, ThingNotFound, PeerUnavailable("things", "is unreachable")
    )
    assert list(responses) == [400, 404, 413, 422, 503]
    assert all(r["model"] is ErrorEnvelope for r in responses.values())
    assert responses[404]["description"] == (
        "- `not_found`: Not found.\n- `thing_not_found`: Thing '…' does not exist."
    )
    assert responses[503]["description"] == (
        "- `things_unavailable`: The things service is unreachable."
    )
    assert error_responses(JSON_BODY, JSON_BODY) == error_responses(JSON_BODY)


def test_a_page_is_cut_from_one_more_item_than_it_holds():
    numbered = [("a", 1), ("b", 2), ("c", 3)]
    assert Page.of(numbered, 2) == Page(["a", "b"], 2)  # the extra one: there is more
    assert Page.of(numbered, 3) == Page(["a", "b", "c"], None)
    assert Page.of([], 3) == Page([], None)
    read = []

    def lazily():
        for item in numbered:
            read.append(item)
            yield item

    Page.of(lazily(), 1)
    assert len(read) == 2  # nothing past the extra one is read


@pytest.mark.parametrize(
    ("cursor", "position"),
    [(INDEX, 12), (TIME, 1795562062.7026203), (TIME_AND_ID, (1795562062.7026203, "usr_1f"))],
)
def test_a_cursor_reads_back_the_position_it_wrote(cursor, position):
    written = cursor.next_of(Page(["item"], position))
    assert re.fullmatch(cursor.pattern, written)
    assert cursor.read(written) == position
    assert cursor.next_of(Page(["item"])) is None


async def test_a_stream_whose_client_leaves_before_its_first_item_is_closed_at_once():
    """Before the first item no response exists to notice the client gone: `primed` watches
    the request's channel, and a disconnect closes the stream where it waits (its cleanup,
    awaits included, runs), and the result has nothing."""
    left, cleaned = asyncio.Event(), []

    async def slow_items():
        try:
            await asyncio.sleep(30)  # a model that takes long to start
            yield "never"
        finally:
            await asyncio.sleep(0)  # a release that awaits (a Redis call)
            cleaned.append(True)

    async def receive() -> dict:
        await left.wait()
        return {"type": "http.disconnect"}

    asyncio.get_running_loop().call_later(0.05, left.set)
    async with asyncio.timeout(10):  # well under the stream's 30 s
        rest = await primed(slow_items(), receive)
    assert [item async for item in rest] == [] and cleaned == [True]
    assert asyncio.current_task().cancelling() == 0  # nothing left pending on the caller


async def test_a_primed_stream_whose_client_stays_is_left_whole():
    """The watch ends with the first item: it took no message from the channel, and the
    stream goes on; a failure before the first item is the stream's own."""
    received = []

    async def receive() -> dict:
        await asyncio.Event().wait()  # the client stays
        received.append("a message")
        return {"type": "http.disconnect"}

    async def items():
        await asyncio.sleep(0.01)
        yield 1
        await asyncio.sleep(0.01)
        yield 2

    rest = await primed(items(), receive)
    assert [item async for item in rest] == [1, 2] and received == []

    async def failing():
        raise TimeoutError("the upstream's own")
        yield

    with pytest.raises(TimeoutError, match="the upstream's own"):
        await primed(failing(), receive)
