"""Ranking long-term memories for a chat turn (avatar_chat.memory.ranking): what a user would
notice, a fact about them coming back when the talk turns to it, within the prompt's budget."""

import math
from dataclasses import dataclass

from avatar_chat.memory.ranking import MemoryIndex, terms


@dataclass
class Memory:
    id: str
    text: str
    pinned: bool = False
    at: str = "2026-12-01T00:00:00Z"


def words(text: str) -> int:
    """A cost of one token per word: budgets in the tests are easy to count."""
    return len(text.split())


def ranked_ids(memories: list[Memory], query: str) -> list[str]:
    return [m.id for m, _ in MemoryIndex.build(memories).rank(query)]


def test_korean_particle_variants_match():
    memories = [
        Memory("name", "사용자의 친구 이름은 민수다"),
        Memory("food", "사용자는 김치찌개를 좋아한다"),
    ]
    for query in ("민수는 오늘 뭐 해?", "민수가 전화했어", "어제 민수를 만났어"):
        assert ranked_ids(memories, query)[:1] == ["name"], query


def test_a_relevant_memory_outranks_an_irrelevant_one():
    memories = [
        Memory("jazz", "The user likes jazz and plays the saxophone"),
        Memory("cat", "The user has a cat named Nabi"),
        Memory("bread", "The user promised to bring 빵 tomorrow"),
    ]
    assert ranked_ids(memories, "Do you still play saxophone? I love jazz.")[0] == "jazz"
    assert ranked_ids(memories, "How is Nabi, your cat?")[0] == "cat"


def test_english_matches_whatever_the_case_and_plurals():
    memories = [Memory("dog", "User has two DOGS"), Memory("city", "User lives in Seoul")]
    assert ranked_ids(memories, "my dog ran away") == ["dog"]
    assert ranked_ids(memories, "SEOUL is cold") == ["city"]


def test_a_memory_sharing_no_term_is_not_ranked():
    memories = [Memory("jazz", "User likes jazz"), Memory("cat", "User has a cat")]
    assert ranked_ids(memories, "tell me about jazz") == ["jazz"]


def test_ties_go_to_the_newer_memory():
    memories = [
        Memory("old", "User likes tea", at="2026-01-01T00:00:00Z"),
        Memory("new", "User likes tea", at="2026-11-01T00:00:00Z"),
        Memory("mid", "User likes tea", at="2026-06-01T00:00:00Z"),
    ]
    assert ranked_ids(memories, "tea?") == ["new", "mid", "old"]


def test_pinned_memories_always_go_in_even_irrelevant_and_past_the_budget():
    memories = [
        Memory("vow", "The user made the character promise never to lie", pinned=True),
        Memory("name", "The user's name is 민수", pinned=True, at="2026-12-02T00:00:00Z"),
        Memory("jazz", "User likes jazz"),
    ]
    chosen = MemoryIndex.build(memories).choose("jazz tonight?", budget=3, cost=words)
    assert [m.id for m in chosen] == ["name", "vow"]  # newest pinned first, nothing else fits


def test_pinned_memories_are_not_ranked():
    memories = [Memory("jazz", "User likes jazz", pinned=True), Memory("sax", "User plays jazz")]
    assert ranked_ids(memories, "jazz") == ["sax"]


def test_the_budget_bounds_the_unpinned_memories():
    memories = [Memory(f"m{i}", f"User likes jazz record {i}") for i in range(10)]
    chosen = MemoryIndex.build(memories).choose("jazz", budget=12, cost=words)
    assert len(chosen) == 2  # 5 words each: a third would take 15
    assert sum(words(m.text) for m in chosen) <= 12


def test_a_memory_too_large_is_skipped_and_a_smaller_later_one_still_fits():
    memories = [
        Memory("long", "jazz jazz jazz every night at the club with friends and family"),
        Memory("short", "User likes jazz"),
    ]
    index = MemoryIndex.build(memories)
    assert [m.id for m, _ in index.rank("jazz")] == ["long", "short"]
    assert [m.id for m in index.choose("jazz", budget=5, cost=words)] == ["short"]


def test_chosen_in_prompt_order_pinned_first_then_by_rank():
    memories = [
        Memory("pin", "User is called Min", pinned=True),
        Memory("weak", "User once mentioned jazz at a party in Busan last spring"),
        Memory("strong", "User loves jazz, jazz piano above all"),
    ]
    chosen = MemoryIndex.build(memories).choose("jazz piano", budget=100, cost=words)
    assert [m.id for m in chosen] == ["pin", "strong", "weak"]


def test_an_empty_query_chooses_only_the_pinned():
    memories = [Memory("pin", "User is called Min", pinned=True), Memory("jazz", "User likes jazz")]
    assert [m.id for m in MemoryIndex.build(memories).choose("", 100, words)] == ["pin"]
    assert [m.id for m in MemoryIndex.build(memories).choose("  ...!? ", 100, words)] == ["pin"]


def test_no_memories_choose_nothing():
    index: MemoryIndex[Memory] = MemoryIndex.build([])
    assert index.rank("민수는 재즈를 좋아해") == []
    assert index.choose("민수는 재즈를 좋아해", 100, words) == []


def test_terms_of_korean_are_syllable_bigrams_and_of_english_words():
    assert terms("민수는 빵") == ["민수", "수는", "빵"]
    assert terms("The User's DOGS, ｆｕｌｌ-width") == ["dog", "full", "width"]
    assert terms("東京") == ["東", "京"]


def test_another_cost_function_is_asked_again():
    """The index remembers costs per cost function: a new estimate (say, after the model's
    tokenizer was learned) must not be answered with the old one's figures."""
    memories = [Memory(f"m{i}", f"User likes jazz record {i}") for i in range(10)]
    index = MemoryIndex.build(memories)
    assert len(index.choose("jazz", budget=12, cost=words)) == 2
    assert len(index.choose("jazz", budget=12, cost=lambda text: 2 * words(text))) == 1
    assert len(index.choose("jazz", budget=12, cost=lambda text: 1)) == 10


def test_a_term_many_memories_share_ranks_them_all_newest_first_on_ties():
    """More than 48 memories with a term: their postings are packed (the common bigrams' way)."""
    memories = [
        Memory(f"m{i:02d}", f"User likes jazz record {i:02d}", at=f"2026-01-01T00:{i:02d}:00Z")
        for i in range(60)
    ]
    memories.append(Memory("blues", "User likes jazz and blues", at="2025-01-01T00:00:00Z"))
    ranked = ranked_ids(memories, "jazz or blues?")
    assert ranked == ["blues"] + [f"m{i:02d}" for i in reversed(range(60))]


def test_scores_are_okapi_bm25():
    texts = [f"민수는 재즈를 좋아해 {'jazz ' * (i % 3)}record {i % 7}" for i in range(80)]
    texts += ["User has a cat", "고양이가 좋아"]
    index = MemoryIndex.build([Memory(f"m{i}", t) for i, t in enumerate(texts)])
    query = "민수가 좋아하는 jazz record 3"
    expected = bm25([terms(t) for t in texts], set(terms(query)))
    for memory, score in index.rank(query):
        assert abs(score - expected[int(memory.id[1:])]) < 1e-5


def bm25(documents: list[list[str]], query: set[str]) -> list[float]:
    """Okapi BM25 (k1 1.2, b 0.75), each query term once: the reference."""
    average = sum(map(len, documents)) / len(documents)
    scores = []
    for document in documents:
        score = 0.0
        for term in query & set(document):
            df = sum(term in d for d in documents)
            idf = math.log(1 + (len(documents) - df + 0.5) / (df + 0.5))
            tf = document.count(term)
            score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(document) / average))
        scores.append(score)
    return scores


def test_memories_without_a_term_are_never_ranked():
    memories = [Memory("void", "The user is..."), Memory("pin", "!!!", pinned=True)]
    index = MemoryIndex.build(memories)
    assert index.rank("the user is here") == []
    assert [m.id for m in index.choose("the user is here", 100, words)] == ["pin"]
