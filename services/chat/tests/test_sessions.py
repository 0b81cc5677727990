"""Session ownership, straight against the store and a real Redis (the HTTP layer has only
the anonymous user until the auth service exists)."""

import pytest

from avatar_chat.errors import SessionNotFound
from avatar_chat.store import SessionStore, TurnRecord

EXCHANGED = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def turn(prompt_tokens: int, completion_tokens: int) -> TurnRecord:
    return TurnRecord(EXCHANGED, "m", prompt_tokens, completion_tokens, 0, None)


async def test_another_users_session_is_invisible_and_untouched(redis):
    store = SessionStore(redis, ttl_s=60)
    await store.record_turn("s1", "alice", turn(10, 2))
    for attempt in (
        store.check_owner("s1", "bob"),
        store.load("s1", "bob"),
        store.history("s1", "bob", 100, None),
        store.delete("s1", "bob"),
        store.record_turn("s1", "bob", turn(1, 1)),
    ):
        with pytest.raises(SessionNotFound):
            await attempt
    history = await store.history("s1", "alice", 100, None)
    assert len(history["messages"]) == 2
    assert history["usage"] == {"prompt_tokens": 10, "completion_tokens": 2}


async def test_sessions_expire_when_idle(redis):
    store = SessionStore(redis, ttl_s=60)
    await store.record_turn("s2", "alice", turn(1, 1))
    assert 0 < await redis.ttl("chat:session:s2") <= 60
    assert 0 < await redis.ttl("chat:session:s2:messages") <= 60


async def test_a_long_session_keeps_its_latest_messages_read_a_page_at_a_time(redis):
    store = SessionStore(redis, ttl_s=60, max_messages=6)
    for n in range(5):  # 10 messages
        said = [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
        await store.record_turn("s3", "alice", TurnRecord(said, "m", 1, 1, 0, None))
    latest = await store.history("s3", "alice", 4, None)
    older = await store.history("s3", "alice", 4, latest["next_before"])
    assert await redis.llen("chat:session:s3:messages") == 6  # the oldest four dropped
    assert [m["content"] for m in latest["messages"]] == ["q3", "a3", "q4", "a4"]
    assert (latest["message_count"], latest["first_message"]) == (10, 6)
    assert [m["content"] for m in older["messages"]] == ["q2", "a2"]
    assert (older["first_message"], older["next_before"]) == (4, None)
