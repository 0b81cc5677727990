"""Sessions straight against the store and a real Redis: ownership, expiry, what a session
keeps (messages and bytes), and its charge to the conversations budget."""

import json

import pytest

from avatar_chat.errors import SessionNotFound
from avatar_chat.store import SESSION_OVERHEAD, SessionStore, TurnRecord
from avatar_shared.budget import Budget
from avatar_shared.identity import Identity

EXCHANGED = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
ALICE, BOB = Identity("alice", signed_in=True), Identity("bob", signed_in=True)
GB = 1024**3


def turn(prompt_tokens: int, completion_tokens: int) -> TurnRecord:
    return TurnRecord(EXCHANGED, "m", prompt_tokens, completion_tokens, 0, None)


def said(text: str) -> TurnRecord:
    exchanged = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    return TurnRecord(exchanged, "m", 1, 1, 0, None)


def store_of(redis, **extra) -> SessionStore:
    return SessionStore(redis, Budget(redis, "conversations", extra.pop("maxmemory", GB)), **extra)


async def test_another_users_session_is_invisible_and_untouched(redis):
    store = store_of(redis, ttl_s=60)
    await store.record_turn("s1", ALICE, turn(10, 2))
    for attempt in (
        store.load("s1", "bob"),
        store.history("s1", "bob", 100, None),
        store.delete("s1", "bob"),
        store.record_turn("s1", BOB, turn(1, 1)),
    ):
        with pytest.raises(SessionNotFound):
            await attempt
    history = await store.history("s1", "alice", 100, None)
    assert len(history["messages"]) == 2
    assert history["usage"] == {"prompt_tokens": 10, "completion_tokens": 2}


async def test_a_turn_without_counts_keeps_the_last_prompt_count(redis):
    store = store_of(redis, ttl_s=60)
    await store.record_turn("s1", ALICE, turn(10, 2))
    await store.record_turn("s1", ALICE, turn(0, 0))  # a stopped stream: the server said none
    history = await store.history("s1", "alice", 100, None)
    assert history["last_prompt_tokens"] == 10
    assert history["usage"] == {"prompt_tokens": 10, "completion_tokens": 2}


async def test_sessions_expire_when_idle(redis):
    store = store_of(redis, ttl_s=60)
    await store.record_turn("s2", ALICE, turn(1, 1))
    assert 0 < await redis.ttl("chat:session:s2") <= 60
    assert 0 < await redis.ttl("chat:session:s2:messages") <= 60


async def test_a_long_session_keeps_its_latest_messages_read_a_page_at_a_time(redis):
    store = store_of(redis, ttl_s=60, max_messages=6)
    for n in range(5):  # 10 messages
        said = [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
        await store.record_turn("s3", ALICE, TurnRecord(said, "m", 1, 1, 0, None))
    latest = await store.history("s3", "alice", 4, None)
    older = await store.history("s3", "alice", 4, latest["next_before"])
    assert await redis.llen("chat:session:s3:messages") == 6  # the oldest four dropped
    assert [m["content"] for m in latest["messages"]] == ["q3", "a3", "q4", "a4"]
    assert (latest["message_count"], latest["first_message"]) == (10, 6)
    assert [m["content"] for m in older["messages"]] == ["q2", "a2"]
    assert (older["first_message"], older["next_before"]) == (4, None)


async def test_a_session_keeps_at_most_its_bytes_less_for_anonymous_owners(redis):
    store = store_of(redis, ttl_s=60, max_bytes=(200_000, 100_000))
    anonymous = Identity("anon-x", signed_in=False)
    for n in range(20):  # 20 turns of about 20 KB each
        await store.record_turn("big", ALICE, said(f"{n:02d}" + "말" * 3000))
        await store.record_turn("small", anonymous, said(f"{n:02d}" + "말" * 3000))
    sizes = {}
    for session in ("big", "small"):
        kept = await redis.lrange(f"chat:session:{session}:messages", 0, -1)
        sizes[session] = sum(len(m.encode()) for m in kept)
        newest = json.loads(kept[-1])["content"]
        assert newest.startswith("19")  # the latest turn is kept, the oldest went
        assert int(await redis.hget(f"chat:session:{session}", "message_count")) == 40
    assert 180_000 < sizes["big"] <= 200_000
    assert 80_000 < sizes["small"] <= 100_000


async def test_the_latest_turn_is_kept_even_past_the_cap(redis):
    store = store_of(redis, ttl_s=60, max_bytes=(65_536, 65_536))
    await store.record_turn("huge", ALICE, said("a" * 40_000))  # 80 KB in one turn
    history = await store.history("huge", "alice", 10, None)
    assert len(history["messages"]) == 2


async def test_sessions_are_charged_to_the_conversations_budget_and_given_back(redis):
    store = store_of(redis, ttl_s=60)
    budget = store.budget
    await store.record_turn("b1", ALICE, said("x" * 1000))
    kept = await redis.lrange("chat:session:b1:messages", 0, -1)
    charged = sum(len(m.encode()) for m in kept) + SESSION_OVERHEAD
    assert await budget.used() == charged
    await store.record_turn("b1", ALICE, said("y" * 1000))
    assert await budget.used() > charged
    await store.delete("b1", "alice")
    assert await budget.used() == 0
