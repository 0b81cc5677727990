"""The global budgets per kind of user data (avatar_shared.budget), on a real Redis."""

import time

import pytest

from avatar_shared.budget import SHARES, Budget, KindFull
from avatar_shared.settings import redis_bytes

MAXMEMORY = 10_000  # bytes: the "characters" share of it is the budget tested


@pytest.fixture
def budget(redis) -> Budget:
    return Budget(redis, "characters", MAXMEMORY)


async def test_a_kind_may_fill_its_share_and_no_more(budget):
    assert budget.limit == int(SHARES["characters"] * MAXMEMORY)
    await budget.reserve("alice", budget.limit - 10)
    with pytest.raises(KindFull) as refused:
        await budget.reserve("bob", 11)
    assert refused.value.status_code == 503 and refused.value.code == "storage_full"
    assert await budget.used() == budget.limit - 10  # the refusal charged nothing
    await budget.reserve("bob", 10)


async def test_deleting_gives_the_room_back(budget):
    await budget.reserve("alice", budget.limit)
    await budget.release("alice", budget.limit)
    assert await budget.used() == 0
    await budget.reserve("bob", budget.limit)


async def test_expired_data_gives_its_bytes_back_at_the_next_write(budget, redis):
    await budget.reserve("anon-gone", budget.limit, expires_at=time.time() - 1)
    await budget.reserve("anon-kept", 100, expires_at=time.time() + 3600)
    assert await budget.used() == 100  # the expired holder was swept by that write
    assert await redis.hget(budget.keys[1], "anon-gone") is None


async def test_another_kind_is_not_refused_when_one_is_full(budget, redis):
    await budget.reserve("alice", budget.limit)
    conversations = Budget(redis, "conversations", MAXMEMORY)
    await conversations.reserve("alice", 100)
    assert await conversations.used() == 100


def test_sizes_are_read_in_redis_units():
    assert redis_bytes("1gb") == 1024**3 and redis_bytes("200MB") == 200 * 1024**2
    assert redis_bytes("512") == 512 and redis_bytes("1k") == 1000
