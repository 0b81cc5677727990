"""How many stored conversations one holder keeps: a signed-in user, or for anonymous callers
their client address (all its ids together). Past the cap, the holder's least recently used
conversation is deleted (of an address's, that of the id holding the most), never another
holder's, and its bytes go back to the conversations budget. Straight against the store and a
real Redis, then through the app (admission too)."""

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_chat.store import SessionStore, TurnRecord
from avatar_devstack.ports import free_port
from avatar_shared.budget import Budget
from avatar_shared.identity import Identity, current_identity

from .helpers import as_anonymous, ask, callers_from_test_headers

GB = 1024**3
HERE, NEIGHBOUR = "10.0.0.1", "10.0.0.2"


def said(text: str) -> TurnRecord:
    exchanged = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    return TurnRecord(exchanged, "m", 1, 1, 0, None)


def anonymous(name: str, address: str) -> Identity:
    return Identity(name, signed_in=False, address=address)


def store_of(redis, per_user: int = 5, per_address: int = 3) -> SessionStore:
    budget = Budget(redis, "conversations", GB)
    return SessionStore(redis, budget, ttl_s=600, max_sessions=(per_user, per_address))


async def stored(redis, session: str) -> bool:
    return bool(await redis.exists(f"chat:session:{session}"))


async def held(redis) -> dict[str, int]:
    return {k: int(v) for k, v in (await redis.hgetall("budget:conversations:held")).items()}


async def test_an_addresss_conversation_past_its_cap_evicts_its_own_oldest_only(redis):
    store = store_of(redis, per_address=3)
    await store.record_turn("neighbour", anonymous("anon-n", NEIGHBOUR), said("n"))
    # A signed-in user behind the same address is not counted by it.
    await store.record_turn("colleague", Identity("alice", True, address=HERE), said("c"))
    for n in range(4):
        await store.record_turn(f"mine-{n}", anonymous("anon-a", HERE), said("x" * 500))
    assert not await stored(redis, "mine-0")
    assert await redis.exists("chat:session:mine-0:messages", "chat:session:mine-0:summaries") == 0
    assert [await stored(redis, f"mine-{n}") for n in range(1, 4)] == [True] * 3
    assert await stored(redis, "neighbour") and await stored(redis, "colleague")
    assert await redis.zcard(f"chat:stored-of:addr:{HERE}") == 3


async def test_the_id_holding_most_of_an_addresss_conversations_gives_up_its_own_first(redis):
    """The ids of one address share its cap: past it, the oldest of the id holding the most
    there goes, so a neighbour's one conversation outlives another's many, and a newcomer
    takes room from whoever holds the most (the cap holds)."""
    store = store_of(redis, per_address=4)
    await store.record_turn("victims", anonymous("anon-v", HERE), said("my story"))
    for n in range(6):
        await store.record_turn(f"theirs-{n}", anonymous("anon-n", HERE), said("n"))
    assert await stored(redis, "victims")
    assert [await stored(redis, f"theirs-{n}") for n in range(6)] == [False] * 3 + [True] * 3
    await store.record_turn("newcomers", anonymous("anon-z", HERE), said("z"))  # holds none
    assert await stored(redis, "victims") and await stored(redis, "newcomers")
    assert [await stored(redis, f"theirs-{n}") for n in range(3, 6)] == [False, True, True]
    assert await redis.zcard(f"chat:stored-of:addr:{HERE}") == 4


async def test_an_evicted_conversation_gives_its_bytes_back(redis):
    store = store_of(redis, per_address=2)
    for n in range(3):
        await store.record_turn(f"s{n}", anonymous("anon-a", HERE), said("y" * 2000))
    charges = await held(redis)
    assert "chat:s0" not in charges
    assert await redis.zscore("budget:conversations:until", "chat:s0") is None
    assert sorted(charges) == ["chat:s1", "chat:s2"]
    assert await store.budget.used() == sum(charges.values())  # exactly the two kept


async def test_the_count_stays_bounded_however_many_conversations(redis):
    store = store_of(redis, per_user=4, per_address=3)
    for n in range(30):
        await store.record_turn(f"a{n}", anonymous(f"anon-{n}", HERE), said("z"))
        await store.record_turn(f"u{n}", Identity("bob", True, address=HERE), said("z"))
    assert [await stored(redis, f"a{n}") for n in range(30)] == [False] * 27 + [True] * 3
    assert [await stored(redis, f"u{n}") for n in range(30)] == [False] * 26 + [True] * 4
    assert await redis.zcard(f"chat:stored-of:addr:{HERE}") == 3
    assert await redis.zcard("chat:stored-of:bob") == 4
    assert len(await held(redis)) == 7


async def test_the_least_recently_used_goes_not_the_first_made(redis):
    store = store_of(redis, per_address=2)
    caller = anonymous("anon-a", HERE)
    await store.record_turn("old-but-used", caller, said("1"))
    await store.record_turn("idle", caller, said("2"))
    await store.record_turn("old-but-used", caller, said("3"))  # used again: most recent now
    await store.record_turn("new", caller, said("4"))
    assert await stored(redis, "old-but-used") and await stored(redis, "new")
    assert not await stored(redis, "idle")


async def test_a_deleted_conversation_leaves_its_holders_count(redis):
    store = store_of(redis, per_address=2)
    caller = anonymous("anon-a", HERE)
    await store.record_turn("keep", caller, said("1"))
    await store.record_turn("gone", caller, said("2"))
    await store.delete("gone", "anon-a")
    await store.record_turn("next", caller, said("3"))  # fits: the deleted one is not counted
    assert await stored(redis, "keep") and await stored(redis, "next")
    assert await redis.zrange(f"chat:stored-of:addr:{HERE}", 0, -1) == ["keep", "next"]


async def test_a_conversation_continued_from_another_address_moves_to_it(redis):
    store = store_of(redis, per_address=1)
    await store.record_turn("travels", anonymous("anon-a", HERE), said("1"))
    await store.record_turn("travels", anonymous("anon-a", NEIGHBOUR), said("2"))
    await store.record_turn("stays", anonymous("anon-b", HERE), said("3"))
    assert await stored(redis, "travels")  # no longer counted where it began
    assert await redis.zrange(f"chat:stored-of:addr:{NEIGHBOUR}", 0, -1) == ["travels"]


async def test_an_evicted_conversation_is_gone_and_its_place_freed(
    app_client, redis, redis_url, backend
):
    settings = ChatSettings(
        redis_url=redis_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        characters_url=f"http://127.0.0.1:{free_port()}",
        chat_rate_per_min=10_000,
        max_stored_sessions_per_address=2,
        **backend.settings,
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    caller = as_anonymous("anon-a", HERE)
    async with app_client(app) as chat:
        made = []
        for _ in range(3):
            response = await chat.post(
                "/api/chat", json=ask("hi", tts_enabled=False), headers=caller
            )
            made.append(response.json()["data"]["session_id"])
        first = await chat.get(f"/api/chat/sessions/{made[0]}", headers=caller)
        last = await chat.get(f"/api/chat/sessions/{made[2]}", headers=caller)
    assert first.status_code == 404 and last.status_code == 200
    assert await redis.zscore("chat:active", made[0]) is None  # its place went with it
    assert await redis.zscore(f"chat:active-of:addr:{HERE}", made[0]) is None
    assert await redis.zscore("chat:active", made[2]) is not None
