"""Rates per caller and per client address (avatar_shared.rate.CallerRate), on a real Redis."""

import pytest

from avatar_shared.identity import Identity
from avatar_shared.rate import Caller, CallerRate, RateLimited, caller_key


def anonymous(user_id: str, address: str) -> Caller:
    identity = Identity(user_id, signed_in=False, address=address)
    return Caller(identity, caller_key(identity))


def signed_in(user_id: str, address: str) -> Caller:
    identity = Identity(user_id, signed_in=True, address=address)
    return Caller(identity, caller_key(identity))


@pytest.fixture
def rate(redis) -> CallerRate:
    return CallerRate(redis, "probe", (2, 3), 60, "probes", "a minute")


async def test_anonymous_ids_of_one_address_share_its_window(rate):
    for caller in ("anon-a", "anon-a", "anon-b"):
        await rate.hit(anonymous(caller, "203.0.113.1"))
    with pytest.raises(RateLimited, match="one network address") as refused:
        await rate.hit(anonymous("anon-c", "203.0.113.1"))  # a fresh id: the address is spent
    assert int(refused.value.headers["Retry-After"]) >= 1
    await rate.hit(anonymous("anon-d", "198.51.100.1"))  # another address has its own


async def test_a_hit_refused_for_the_caller_costs_the_address_nothing(rate):
    a = anonymous("anon-a", "203.0.113.2")
    await rate.hit(a)
    await rate.hit(a)
    for _ in range(3):  # refused by its own window: none of these count for the address
        with pytest.raises(RateLimited, match="At most 2 probes"):
            await rate.hit(a)
    await rate.hit(anonymous("anon-b", "203.0.113.2"))  # the address's third


async def test_signed_in_callers_are_not_counted_by_address(rate):
    for user in ("alice", "alice", "bob", "bob"):
        await rate.hit(signed_in(user, "203.0.113.3"))
