"""The pieces of context fitting on their own: token estimates and the summary cache."""

from avatar_chat.summaries import (
    KEPT_SUMMARIES,
    Summary,
    SummaryStore,
    best_match,
    prefix_digests,
    summaries_key,
)
from avatar_chat.tokens import TokenEstimator, default_tokens, learn_chars_per_token

KOREAN = "안녕하세요, 오늘 도서관에서 만나서 반가워요!"
ENGLISH = "Hello, it is nice to meet you in the library today!"


def test_the_default_estimate_is_conservative_for_korean_and_english():
    assert default_tokens(KOREAN) >= len([c for c in KOREAN if "가" <= c <= "힣"])
    assert len(ENGLISH) / 4 < default_tokens(ENGLISH) < len(ENGLISH) / 2


def test_a_learned_ratio_replaces_the_default_and_miscounts_are_ignored():
    messages = [{"role": "user", "content": ENGLISH * 10}]
    ratio = learn_chars_per_token(messages, counted=4 + 110)
    assert ratio is not None and abs(ratio - len(ENGLISH) * 10 / 110) < 1e-9
    assert TokenEstimator(ratio).text(ENGLISH * 10) in (110, 111)
    assert learn_chars_per_token(messages, counted=0) is None  # a server that reports none
    assert learn_chars_per_token(messages, counted=5) is None  # a partial (cached) count


def conversation(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]


def test_a_summary_matches_only_the_exact_turns_it_covers():
    turns = conversation(10)
    digests = prefix_digests(turns)
    cached = {n: Summary(n, digests[n], f"s{n}", "t") for n in (4, 8)}
    assert best_match(cached, digests).covered == 8
    edited = [*turns[:6], {"role": "assistant", "content": "changed"}, *turns[7:]]
    assert best_match(cached, prefix_digests(edited)).covered == 4
    assert best_match(cached, prefix_digests(turns[:6])).covered == 4  # shorter than 8
    assert best_match(cached, prefix_digests([{"role": "user", "content": "x"}])) is None


async def test_saving_drops_stale_and_surplus_summaries(redis):
    store = SummaryStore(redis, ttl_s=60, lock_s=5)
    digests = prefix_digests(conversation(40))
    known: dict[int, Summary] = {}
    for n in range(2, 2 + 2 * (KEPT_SUMMARIES + 2), 2):
        await store.save("s", Summary(n, digests[n], f"s{n}", "t"), known, base=n - 2)
    kept = sorted(await store.load("s"))
    assert kept == sorted(known) and len(kept) == KEPT_SUMMARIES and kept[-1] == 16
    # After an edit at turn 9, a new summary of 10 turns replaces those past its base (8).
    await store.save("s", Summary(10, "other", "s10'", "t"), known, base=8)
    assert sorted(await store.load("s")) == [6, 8, 10]
    assert 0 < await redis.ttl(summaries_key("s")) <= 60
