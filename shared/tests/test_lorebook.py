"""Lorebook activation, rule by rule, and Seraphina's own book from SillyTavern."""

import random
import time
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from avatar_shared import lorebook
from avatar_shared.lorebook import (
    MAX_KEY_CHARS,
    STORED,
    Lorebook,
    activate,
    strip_decorators,
)
from avatar_shared.macros import Macros
from tests.helpers import seraphina_card


def words(text: str) -> int:
    return len(text.split())


def book(*entries: dict, **fields: object) -> Lorebook:
    return Lorebook.model_validate({"entries": list(entries), **fields})


def entry(keys: list[str], content: str = "lore", **fields: object) -> dict:
    return {"keys": keys, "content": content, **fields}


def fired(lore: Lorebook, *texts: str, depth: int = 4, budget: int = 10_000) -> list[str]:
    return [f.text for f in activate(lore, list(texts), depth, budget, words).fired]


def seraphina_book() -> Lorebook:
    return Lorebook.model_validate(seraphina_card()["data"]["character_book"])


def test_seraphinas_forest_entry_fires_on_a_recent_forest_and_names_its_key():
    lore = seraphina_book()
    activation = activate(lore, ["Hello there.", "Tell me about this forest?"], 4, 1000, words)
    assert [(f.index, f.key, f.place) for f in activation.fired] == [(0, "forest", "before_char")]
    assert "Eldoria is here, all of the woods" in activation.fired[0].text
    assert activate(lore, ["Hello there.", "How are you?"], 4, 1000, words).fired == []


def test_only_the_last_scan_depth_messages_and_the_new_one_are_read():
    lore = book(entry(["dragon"], "dragons"))
    history = ["a dragon!", "one", "two", "three"]
    assert fired(lore, *history, "hi", depth=4) == ["dragons"]
    assert fired(lore, *history, "hi", depth=3) == []
    assert fired(book(entry(["dragon"], "d"), scan_depth=0), "a dragon", "hi", depth=4) == []


def test_keys_match_whatever_the_case_unless_the_entry_says_otherwise():
    assert fired(book(entry(["Dragon"])), "a DRAGON") == ["lore"]
    assert fired(book(entry(["Dragon"], case_sensitive=True)), "a DRAGON") == []
    assert fired(book(entry(["Dragon"], case_sensitive=True)), "a Dragon") == ["lore"]


def test_latin_keys_match_whole_words_and_korean_keys_match_inside_words():
    assert fired(book(entry(["wood"])), "into the woodland") == []
    assert fired(book(entry(["wood"])), "into the wood, quickly") == ["lore"]
    assert fired(book(entry(["magical forest"])), "a Magical Forest!") == ["lore"]
    assert fired(book(entry(["숲"])), "숲에서 길을 잃었어") == ["lore"]  # a particle attached
    assert fired(book(entry(["거북선"])), "거북선은 어떻게 만들었나요?") == ["lore"]
    assert fired(book(entry(["ドラゴン"])), "ドラゴンが来た") == ["lore"]


def test_a_selective_entry_needs_a_secondary_key_too_and_says_so_when_it_lacks_one():
    lore = book(entry(["castle"], selective=True, secondary_keys=["night", "밤"]))
    assert fired(lore, "the castle at night") == ["lore"]
    assert fired(lore, "밤의 castle") == ["lore"]
    activation = activate(lore, ["the castle by day"], 4, 100, words)
    assert activation.fired == [] and [s.reason for s in activation.skipped] == [
        "secondary_key_missing"
    ]


def test_constant_entries_are_always_in_and_disabled_ones_never():
    lore = book(
        entry([], "always", constant=True),
        entry(["dragon"], "off", enabled=False),
        entry([], "off too", constant=True, enabled=False),
    )
    activation = activate(lore, ["a dragon"], 4, 100, words)
    assert [f.text for f in activation.fired] == ["always"]
    assert [(s.index, s.reason) for s in activation.skipped] == [(1, "disabled"), (2, "disabled")]


def test_insertion_order_orders_and_priority_decides_what_the_budget_keeps():
    lore = book(
        entry(["a"], "first two", insertion_order=20, priority=1),
        entry(["a"], "kept three words", insertion_order=10, priority=9),
        entry(["a"], "low", insertion_order=5, priority=0),
    )
    assert fired(lore, "a") == ["low", "kept three words", "first two"]
    activation = activate(lore, ["a"], 4, 5, words)
    assert [f.text for f in activation.fired] == ["kept three words", "first two"]
    assert [(s.index, s.reason) for s in activation.skipped] == [(2, "budget")]
    tight = activate(book(entry(["a"], "one two", token_budget=None)), ["a"], 4, 1, words)
    assert tight.fired == [] and tight.skipped[0].reason == "budget"
    # A book may ask for less than the caller gives (its share of the window), not more.
    assert fired(book(entry(["a"], "one two"), token_budget=1), "a", budget=10) == []
    assert fired(book(entry(["a"], "one two"), token_budget=99), "a", budget=1) == []


def test_without_priorities_the_budget_keeps_the_highest_insertion_order_as_sillytavern_does():
    """SillyTavern: a higher order is a higher priority (and goes closer to the end)."""
    lore = book(
        entry(["a"], "late and kept", insertion_order=900),
        entry(["a"], "early dropped", insertion_order=10),
    )
    activation = activate(lore, ["a"], 4, 3, words)
    assert [f.text for f in activation.fired] == ["late and kept"]
    assert [(s.index, s.reason) for s in activation.skipped] == [(1, "budget")]


def test_recursive_scanning_follows_activated_content_without_repeats_and_stops():
    chain = [entry([f"k{i}"], f"k{i + 1} text") for i in range(8)]
    lore = book(*chain, recursive_scanning=True)
    assert fired(lore, "k0") == ["k1 text", "k2 text", "k3 text", "k4 text"]  # 3 rounds past
    assert fired(book(*chain), "k0") == ["k1 text"]  # only when the book asks
    loop = book(entry(["a"], "b"), entry(["b"], "a"), recursive_scanning=True)
    assert fired(loop, "a") == ["b", "a"]


def test_regex_keys_match_and_a_catastrophic_pattern_is_bounded(monkeypatch):
    assert fired(book(entry(["/drag(on|ons)/i"])), "DRAGONS everywhere") == ["lore"]
    assert fired(book(entry(["^k\\d+$"], use_regex=True)), "k42") == ["lore"]
    # The key's own timeout is what is tried here, not the whole scan's (50 ms): on a loaded
    # machine the scan's could end it before the second entry, as it is meant to.
    monkeypatch.setattr(lorebook, "ACTIVATION_DEADLINE_S", 30.0)
    hostile = book(entry(["/(a+)+$/"], "never"), entry(["a"], "plain"))
    started = time.perf_counter()
    activation = activate(hostile, ["a" * 5000 + "! a"], 4, 100, words)
    assert time.perf_counter() - started < 10  # not a hang (speed: bench/prompt_build.py)
    assert [f.text for f in activation.fired] == ["plain"]
    assert [(s.index, s.reason) for s in activation.skipped] == [(0, "bad_regex")]
    with pytest.raises(ValidationError, match="does not compile"):
        book(entry(["/(unclosed/"]))  # refused when stored, so never tried
    assert fired(book(entry(["/usr/bin"])), "see /usr/bin now") == ["lore"]  # no regex: no flags


def test_decorators_place_an_entry_at_a_depth_with_a_role_and_are_not_its_text():
    lore = book(entry(["a"], "@@depth 2\n@@role user\n@@unknown x\nthe lore"))
    [item] = activate(lore, ["a"], 4, 100, words).fired
    assert (item.place, item.depth, item.role, item.text) == ("depth", 2, "user", "the lore")
    sillytavern = book(entry(["a"], "t", extensions={"position": 4, "depth": 3}))
    [item] = activate(sillytavern, ["a"], 4, 100, words).fired
    assert (item.place, item.depth, item.role) == ("depth", 3, "system")
    assert strip_decorators("no decorators\n@@depth 1") == ("no decorators\n@@depth 1", {})


def test_a_scan_is_bounded_in_keys_content_and_time():
    with pytest.raises(ValidationError, match="keys in all"):
        book(*[entry([f"k{i}-{j}" for j in range(60)]) for i in range(40)])
    with pytest.raises(ValidationError, match="characters"):
        book(*[entry(["k"], "c" * 8000) for _ in range(30)])
    many = book(*[entry([f"w{i}", "a" * 50]) for i in range(400)])
    started = time.perf_counter()
    activate(many, ["a " * 20_000], 4, 100, words)  # every key tried over a long text
    assert time.perf_counter() - started < 10  # not a hang (speed: bench/prompt_build.py)


def test_books_are_bounded_and_keep_what_they_do_not_know():
    with pytest.raises(ValidationError):
        book(entry(["k" * (MAX_KEY_CHARS + 1)]))
    with pytest.raises(ValidationError):
        book(entry(["a"], enabled="yes"))  # strict: a string is not a boolean
    with pytest.raises(ValidationError):
        book(entry(["a"], id=False))  # nor a boolean an id (the schema says int or string)
    raw = {"entries": [{"keys": ["a"], "content": "x", "st_extra": 1}], "other": {"y": 2}}
    assert Lorebook.model_validate(raw).model_dump(exclude_unset=True) == raw


# --- SillyTavern's exports: its own settings in `extensions`, as chat keeps the book --------


def st_entry(keys: list[str], content: str = "lore", **extensions: object) -> dict:
    """An entry as SillyTavern's card export writes it: `use_regex: true` on every one, its
    settings in `extensions` (null: the frontend's default)."""
    written = {"position": 1, "depth": 4, "selectiveLogic": 0, "display_index": 0, "role": 0}
    written |= {"case_sensitive": None, "match_whole_words": None}
    return entry(keys, content, use_regex=True, extensions=written | extensions)


def as_chat_keeps(*entries: dict) -> Lorebook:
    return book(*entries).for_prompt()


def test_a_sillytavern_export_reads_keys_as_regexes_only_when_slashed():
    lore = as_chat_keeps(st_entry(["*hugs*", "[OOC]"], "plain"), st_entry(["/drag(on|ons)/i"]))
    assert fired(lore, "hello there, how are you") == []  # [OOC] is no character class
    assert fired(lore, "*hugs* you") == ["plain"]
    assert fired(lore, "[OOC] back in five") == ["plain"]
    assert fired(lore, "DRAGONS everywhere") == ["lore"]
    # Other V3 entries with `use_regex` keep it: every key a regex, compiled when stored.
    assert fired(book(entry(["[OOC]"], use_regex=True)), "hello there") == ["lore"]
    with pytest.raises(ValidationError, match="does not compile"):
        book(entry(["*hugs*"], use_regex=True))


def test_sillytavern_selective_logic_reads_the_secondary_keys_its_four_ways():
    texts = ["the castle", "the castle at night", "the castle at night in a storm"]
    fires_with_none_one_both = {
        "AND_ANY": [False, True, True],
        "NOT_ALL": [True, True, False],
        "NOT_ANY": [True, False, False],
        "AND_ALL": [False, False, True],
    }
    for logic, (name, fires) in enumerate(fires_with_none_one_both.items()):
        castle = st_entry(["castle"], selectiveLogic=logic)
        lore = as_chat_keeps(castle | {"selective": True, "secondary_keys": ["night", "storm"]})
        for text, expected in zip(texts, fires, strict=True):
            activation = activate(lore, [text], 4, 100, words)
            assert (len(activation.fired), [s.reason for s in activation.skipped]) == (
                (1, []) if expected else (0, ["secondary_key_missing"])
            ), (name, text)


def test_a_slashed_regex_key_ignores_case_only_with_its_i_flag():
    assert fired(book(entry(["/\\bMay\\b/"])), "you may go now") == []
    assert fired(book(entry(["/\\bMay\\b/"])), "May is the queen") == ["lore"]
    assert fired(book(entry(["/\\bmay\\b/i"])), "MAY I?") == ["lore"]
    assert fired(book(entry(["/\\bmay\\b/i"], case_sensitive=True)), "MAY I?") == ["lore"]


def test_sillytavern_case_and_whole_word_settings_win_over_our_defaults_when_set():
    assert fired(as_chat_keeps(st_entry(["dragon"])), "two dragons") == []  # null: ours
    assert fired(as_chat_keeps(st_entry(["dragon"], match_whole_words=False)), "two dragons") == [
        "lore"
    ]
    # SillyTavern's whole words: bounded by what is no ASCII word character (JavaScript's
    # \W), so a Korean key still fires before its particle; a key of words, anywhere.
    whole = {"match_whole_words": True}
    assert fired(as_chat_keeps(st_entry(["dragon"], **whole)), "two dragons") == []
    assert fired(as_chat_keeps(st_entry(["dragon"], **whole)), "a dragon!") == ["lore"]
    assert fired(as_chat_keeps(st_entry(["숲"], **whole)), "숲에서 쉬자") == ["lore"]
    assert fired(as_chat_keeps(st_entry(["red dragon"], **whole)), "red dragons") == ["lore"]
    assert fired(as_chat_keeps(st_entry(["Rose"], case_sensitive=True)), "a rose") == []
    assert fired(as_chat_keeps(st_entry(["Rose"], case_sensitive=True)), "Rose said") == ["lore"]
    lenient = st_entry(["Rose"], case_sensitive=False) | {"case_sensitive": True}
    assert fired(as_chat_keeps(lenient), "a rose") == ["lore"]  # SillyTavern reads its own


def test_a_sillytavern_depth_entry_keeps_its_role_unless_a_decorator_says_otherwise():
    def role(content: str, st_role: int) -> str:
        lore = as_chat_keeps(st_entry(["gate"], content, position=4, depth=0, role=st_role))
        [item] = activate(lore, ["open the gate"], 4, 100, words).fired
        return item.role

    assert [role("creak", r) for r in (0, 1, 2)] == ["system", "user", "assistant"]
    assert role("@@role system\ncreak", 2) == "system"


def test_a_sillytavern_slashed_key_that_javascript_refuses_is_plain_text_as_there():
    # SillyTavern's parseRegexFromString gives null for these, and the key is then matched
    # as written; the card is imported, not refused.
    lore = as_chat_keeps(st_entry(["/([/"], "broken"), st_entry(["/sword/ii"], "twice"))
    assert fired(lore, "a sword and a shield") == []
    assert fired(lore, "she typed /([/ again") == ["broken"]
    assert fired(lore, "the flag /sword/ii stays text") == ["twice"]
    # Anyone else's slashed key means a regex: one that does not compile is refused.
    with pytest.raises(ValidationError, match="does not compile"):
        book(entry(["/([/"]))


def test_a_sillytavern_regex_key_may_carry_javascripts_g_flag():
    lore = as_chat_keeps(st_entry(["/\\bdragons?\\b/gi"]))
    assert fired(lore, "A Dragon lands") == ["lore"]
    assert fired(lore, "dragonfly") == []


def test_sillytavern_selective_logic_it_does_not_know_never_fires_its_entry():
    def outcome(logic: object, secondary: list[str], text: str) -> tuple[int, list[str]]:
        castle = st_entry(["castle"], selectiveLogic=logic)
        lore = as_chat_keeps(castle | {"selective": True, "secondary_keys": secondary})
        activation = activate(lore, [text], 4, 100, words)
        return len(activation.fired), [s.reason for s in activation.skipped]

    missing = (0, ["secondary_key_missing"])
    assert outcome(7, ["night"], "the castle at night") == missing
    assert outcome("0", ["night"], "the castle at night") == missing  # JavaScript's ===
    assert outcome(True, ["night"], "the castle at night") == missing
    assert outcome(None, ["night"], "the castle at night") == (1, [])  # null: AND ANY
    assert outcome(1.0, ["night"], "the castle at noon") == (1, [])  # NOT ALL, as 1
    # A blank secondary key is one never found, as SillyTavern counts it.
    assert outcome(0, [""], "the castle") == missing
    assert outcome(2, [""], "the castle") == (1, [])
    assert outcome(0, ["", "night"], "the castle at night") == (1, [])


# The regex module unrolls counted repeats as it compiles: this 22-character key grew without
# bound (MemoryError, or the process killed). Its counts alone refuse it, at no cost.
BOMB = "/(?:a{65535}){65535}/"


def test_a_regex_key_that_would_cost_too_much_to_compile_is_refused_before_it_is():
    for key in (BOMB, "/a{1001}/", "/(?:a{101}){100}/", "/(?:[ab]{11}){1000}/", "^x{2000,}"):
        with pytest.raises(ValidationError, match="too costly"):
            book(entry([key], use_regex=not key.startswith("/")))
    within = book(entry(["/x{1000}/", "/(?:a{100}){100}z/", "/\\p{L}{3}/", "{{char}}"]))
    assert fired(within, "a" * 10_000 + "z") == ["lore"]
    # Each key within its bounds, but the book's keys unroll to more in all.
    many = [entry([f"/(?:a{{100}}){{100}}{n}/"]) for n in range(11)]
    with pytest.raises(ValidationError, match="100000 copies in all"):
        book(*many)


def test_a_sillytavern_regex_key_too_costly_to_compile_is_plain_text_as_one_it_refuses():
    lore = as_chat_keeps(st_entry([BOMB], "bomb"), st_entry(["/a{1001}/i"], "costly"))
    assert fired(lore, "a" * 2000) == []
    assert fired(lore, f"she typed {BOMB} and /a{{1001}}/i") == ["bomb", "costly"]


def test_a_stored_book_is_read_back_without_compiling_its_regex_keys():
    """Checked when written; one stored before a bound was set stays readable, and a key the
    bounds refuse never runs (nor is it compiled) when a scan meets it."""
    stored = {"entries": [entry(["/(unclosed/"], "broken"), entry([BOMB], "bomb")]}
    lore = Lorebook.model_validate(stored, context=STORED)
    assert lore.for_prompt().entries == lore.entries  # what chat keeps: not checked again
    activation = activate(lore, ["(unclosed aaaa"], 4, 100, words)
    assert activation.fired == []
    assert [(s.index, s.reason) for s in activation.skipped] == [(0, "bad_regex"), (1, "bad_regex")]


@pytest.mark.parametrize(
    "key",
    [
        "/(?x)(?:(?:a{1000}) {1000})/",  # verbose: the space holds no element
        "/(?:(?:a{1000})(?#note){1000})/",  # a comment holds none
        "/(?:(?:a{1000})(?i){1000})/",  # nor inline flags
        "/(?x)(?:a{1 0 0 0}){1 0 0 0}/",  # verbose reads spaced digits as a count
    ],
)
def test_a_group_javascript_does_not_know_cannot_hide_a_count_from_the_cost(key):
    """What the regex module reads as no element (verbose spaces, comments, inline flags)
    moves a count onto the group before it: each of these unrolls to a million copies."""
    with pytest.raises(ValidationError, match="too costly"):
        book(entry([key]))
    assert fired(as_chat_keeps(st_entry([key], "plain")), f"the key {key}") == ["plain"]


def test_a_name_in_a_regex_key_is_matched_as_written():
    """A macro's name is literal text in a regex key: its `(`, `.` or `{1000}` neither change
    the pattern nor what it costs."""
    lore = book(entry(["/{{char}} is here/"], "arrived"), entry(["/x<BOT>y/"], "braced"))
    names = Macros(char="Dr. Who (b){1000}", user="User").expand

    def fired_for(text: str) -> list[str]:
        return [f.text for f in activate(lore, [text], 4, 10_000, words, names).fired]

    assert fired_for("Dr. Who (b){1000} is here") == ["arrived"]
    assert fired_for("DrX Who b is here") == []
    assert fired_for("x" + "Dr. Who (b){1000}" + "y") == ["braced"]


def test_a_prepared_book_s_first_scan_tries_every_entry():
    """A large book's matchers are made before its scan's deadline starts (chat prepares
    the book it keeps): the first scan of a fresh book finds its lore like any other."""

    def regex_keys(n: int) -> list[str]:
        return [f"/\\b{word}{n}_{i}(s|es)?\\b/i" for word in ("castle", "river") for i in range(8)]

    many = [entry(regex_keys(n), f"lore {n}") for n in range(100)]
    fresh = Lorebook.model_validate({"entries": [*many, entry(["sword"], "SWORD LORE")]})
    kept = Lorebook.model_validate(fresh.model_dump(), context=STORED).for_prompt()
    assert fired(kept, "I draw my sword") == ["SWORD LORE"]


# --- SillyTavern's settings for an activated entry: probability, groups, recursion --------


def kept(lore: Lorebook, *texts: str, seed: int = 0) -> list[str]:
    activation = activate(lore, list(texts), 4, 10_000, words, None, random.Random(seed))
    return [f.text for f in activation.fired]


def recursive(*entries: dict) -> Lorebook:
    return book(*entries, recursive_scanning=True).for_prompt()


def test_a_books_own_scan_depth_counts_as_sillytaverns_the_new_message_among_them():
    lore = lambda depth: book(entry(["dragon"], "dragons"), scan_depth=depth)  # noqa: E731
    assert fired(lore(1), "a dragon", "hi") == []  # the new message alone
    assert fired(lore(1), "hi", "a dragon") == ["dragons"]
    assert fired(lore(2), "a dragon", "hi") == ["dragons"]
    assert fired(lore(2), "a dragon", "one", "hi") == []
    assert fired(lore(5), "a dragon", "hi") == ["dragons"]  # fewer messages than the depth
    constant = book(entry([], "always", constant=True), scan_depth=0)
    assert fired(constant, "hi") == ["always"]


def test_probability_zero_never_goes_in_and_a_hundred_always_with_the_reason():
    lore = as_chat_keeps(
        st_entry(["phone"], "never", useProbability=True, probability=0),
        st_entry(["phone"], "always", useProbability=True, probability=100),
        st_entry(["phone"], "unrolled", useProbability=False, probability=0),
        st_entry(["phone"], "plain"),
    )
    for seed in range(50):
        assert kept(lore, "the phone", seed=seed) == ["always", "unrolled", "plain"]
    activation = activate(lore, ["the phone"], 4, 100, words)
    assert [(s.index, s.reason) for s in activation.skipped] == [(0, "probability")]


def test_a_probability_is_rolled_with_the_rng_given_so_a_seed_replays_it():
    lore = as_chat_keeps(st_entry(["phone"], "maybe", useProbability=True, probability=50))
    rolls = [kept(lore, "the phone", seed=seed) for seed in range(40)]
    assert 5 < rolls.count(["maybe"]) < 35
    assert rolls == [kept(lore, "the phone", seed=seed) for seed in range(40)]
    constant = as_chat_keeps(st_entry([], "c", constant=True, probability=0))
    assert kept(constant, "hi") == []  # constant, yet rolled, as in SillyTavern


def test_an_inclusion_group_lets_in_exactly_one_of_its_activated_entries_by_weight():
    lore = as_chat_keeps(
        st_entry(["phone"], "busy", group="mood"),
        st_entry(["phone"], "free", group="mood, calls"),
        st_entry(["phone"], "weightless", group="mood", group_weight=0),
        st_entry(["phone"], "alone", group="other"),
    )
    seen = set()
    for seed in range(40):
        texts = kept(lore, "the phone", seed=seed)
        mood = [t for t in texts if t in ("busy", "free", "weightless")]
        assert len(mood) == 1 and "alone" in texts
        seen.add(mood[0])
    assert seen == {"busy", "free"}
    activation = activate(lore, ["the phone"], 4, 100, words, None, random.Random(1))
    assert {s.reason for s in activation.skipped} == {"group"}
    assert len(activation.skipped) == 2


def test_group_override_lets_in_the_highest_insertion_order_of_the_group():
    lore = as_chat_keeps(
        st_entry(["phone"], "low", group="mood", group_override=True),
        {**st_entry(["phone"], "high", group="mood", group_override=True), "insertion_order": 200},
        {**st_entry(["phone"], "heavy", group="mood", group_weight=1000), "insertion_order": 900},
    )
    for seed in range(20):
        assert kept(lore, "the phone", seed=seed) == ["high"]


def test_prevent_recursion_content_activates_nothing_else():
    lore = recursive(
        st_entry(["phone"], "a dragon calls", prevent_recursion=True),
        st_entry(["dragon"], "dragons hoard gold"),
    )
    assert kept(lore, "the phone") == ["a dragon calls"]
    assert kept(lore, "the phone and a dragon") == ["a dragon calls", "dragons hoard gold"]


def test_exclude_recursion_entries_fire_on_the_messages_but_never_on_content():
    lore = recursive(
        st_entry(["phone"], "a dragon calls"),
        st_entry(["dragon"], "dragons hoard gold", exclude_recursion=True),
    )
    assert kept(lore, "the phone") == ["a dragon calls"]
    assert kept(lore, "a dragon") == ["dragons hoard gold"]


def test_delay_until_recursion_entries_wait_for_a_round_of_recursion():
    lore = recursive(
        st_entry(["phone"], "a dragon calls"),
        st_entry(["dragon"], "dragons hoard gold", delay_until_recursion=True),
        st_entry(["gold"], "gold glitters", delay_until_recursion=1),
    )
    assert kept(lore, "a dragon") == []  # nothing to recurse on: no round of recursion
    assert kept(lore, "the phone") == ["a dragon calls", "dragons hoard gold", "gold glitters"]
    # In the round, the messages may activate it too (SillyTavern scans them again).
    castle = st_entry(["castle"], "castles stand", delay_until_recursion=True)
    lore = recursive(st_entry(["phone"], "it rings"), castle)
    assert kept(lore, "the castle") == []
    assert kept(lore, "the phone at the castle") == ["it rings", "castles stand"]
    assert kept(book(castle).for_prompt(), "the phone at the castle") == []  # no recursion


def test_a_group_with_an_entry_in_keeps_out_its_entries_content_activates_later():
    lore = recursive(
        st_entry(["phone"], "a dragon calls", group="mood"),
        st_entry(["dragon"], "dragons hoard gold", group="mood"),
    )
    activation = activate(lore, ["the phone"], 4, 100, words, None, random.Random(0))
    assert [f.text for f in activation.fired] == ["a dragon calls"]
    assert [(s.index, s.reason) for s in activation.skipped] == [(1, "group")]


def test_chat_keeps_sillytaverns_activation_settings_of_an_entry():
    settings = {
        "useProbability": True, "probability": 10, "group": "g", "group_override": True,
        "group_weight": 5, "prevent_recursion": True, "exclude_recursion": True,
        "delay_until_recursion": 2, "use_group_scoring": True,
    }  # fmt: skip
    kept_book = as_chat_keeps(st_entry(["k"], "x", **settings, vectorized=False))
    assert settings.items() <= kept_book.entries[0].extensions.items()
    assert "vectorized" not in kept_book.entries[0].extensions


def test_group_scoring_leaves_out_the_entries_that_match_fewer_keys_before_the_draw():
    lore = as_chat_keeps(
        st_entry(["phone"], "one key", group="mood", use_group_scoring=True),
        st_entry(["phone", "rings"], "two keys", group="mood", use_group_scoring=True),
        st_entry(["phone"], "unscored", group="mood"),  # null: SillyTavern's default, off
    )
    seen = {tuple(kept(lore, "the phone rings", seed=seed)) for seed in range(30)}
    assert seen == {("two keys",), ("unscored",)}
    activation = activate(lore, ["the phone rings"], 4, 100, words, None, random.Random(0))
    assert (0, "group") in [(s.index, s.reason) for s in activation.skipped]


@pytest.mark.parametrize(
    "key", ["/(?:(?:a{100}){e<=0}{100}){e<=0}{100}/", "/(?:a{100}){i}{100}/", "/(?:ab){1<=e<=2}/"]
)
def test_a_fuzzy_constraint_cannot_hide_a_count_from_the_cost(key):
    """The regex module reads `{e<=0}` as a fuzzy constraint holding no element: a count
    after it repeats the group before it (the first key unrolls to a million copies)."""
    with pytest.raises(ValidationError, match="too costly"):
        book(entry([key]))


def test_a_name_never_makes_a_plain_key_a_regex():
    """A plain `{{user}}` key fires on the user's name as text, even a name written like a
    regex key (it would otherwise be compiled, at whatever cost)."""
    lore = book(entry(["{{user}}"], "named"))
    names = Macros(char="Sage", user="/(?:a{100}){100}/").expand

    def fired_for(text: str) -> list[str]:
        return [f.text for f in activate(lore, [text], 4, 10_000, words, names).fired]

    assert fired_for("a" * 10_000) == []
    assert fired_for("I am /(?:a{100}){100}/ indeed") == ["named"]


def test_a_delayed_entry_no_round_of_recursion_came_for_is_left_out_as_delayed():
    castle = st_entry(["castle"], "castles stand", delay_until_recursion=True)
    gate = {
        **st_entry(["gate"], "gates open", delay_until_recursion=1),
        "selective": True,
        "secondary_keys": ["key"],
    }

    def left_out(lore: Lorebook, text: str) -> list[tuple[int, str]]:
        return [(s.index, s.reason) for s in activate(lore, [text], 4, 100, words).skipped]

    assert left_out(book(castle).for_prompt(), "the castle") == [(0, "delayed")]  # no recursion
    lore = recursive(st_entry(["phone"], "it rings"), castle, gate)
    assert left_out(lore, "the castle") == [(1, "delayed")]  # nothing activated to recurse on
    assert left_out(lore, "the phone at the castle") == []  # its round came: it is in
    # Left out on the messages for another reason, it says that one.
    assert left_out(lore, "the gate") == [(2, "secondary_key_missing")]


def test_group_scoring_past_the_scans_deadline_tries_no_more_entries(monkeypatch):
    """Scoring runs every key of a group's entries: past the deadline it scores none, and
    the entries it did not score are not tried, as the scan leaves the entries it had no
    time for (not in, and not in the receipt)."""
    lore = as_chat_keeps(
        st_entry(["phone"], "one key", group="mood", use_group_scoring=True),
        st_entry(["phone", "rings"], "two keys", group="mood", use_group_scoring=True),
        st_entry(["phone"], "sunny", group="weather"),
        st_entry(["phone"], "rainy", group="weather"),
        st_entry(["phone"], "alone"),
    )
    now = [0.0]  # the scan's clock: its time is spent once every entry is matched
    monkeypatch.setattr(lorebook, "time", SimpleNamespace(monotonic=lambda: now[0]))
    matches = lorebook._matches

    def matched_then_late(*args: object, **kwargs: object) -> object:
        found = matches(*args, **kwargs)
        now[0] = 1.0
        return found

    monkeypatch.setattr(lorebook, "_matches", matched_then_late)
    activation = activate(lore, ["the phone rings"], 4, 100, words, None, random.Random(0))
    fired_texts = [f.text for f in activation.fired]
    assert "alone" in fired_texts and not {"one key", "two keys"} & set(fired_texts)
    assert len({"sunny", "rainy"} & set(fired_texts)) == 1  # a group without scoring draws
    assert [s.reason for s in activation.skipped] == ["group"]  # the other of the weather
