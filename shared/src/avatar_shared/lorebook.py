"""A character's lorebook: Character Card V2's `character_book`, with V3's additions.

The one model of it, shared by the characters service (which stores, validates, imports and
exports books) and the chat service (which reads a character's book and activates its entries
in a prompt). Fields the specs define are typed and bounded; anything else a card carries
(unknown fields, `extensions` of other frontends) is kept as it came, so an export gives back
what was imported. The spec's optional fields stay optional: what a book leaves out is left
out again when it is written back (`model_dump(exclude_unset=True)`).

Specs: character-card-spec-v2 (`character_book`), character-card-spec-v3 (`use_regex`, string
ids, `@@decorators` at the start of an entry's content).
"""

import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import regex
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    model_validator,
)

from avatar_shared.json_types import JsonInt, integral_float
from avatar_shared.macros import MACRO
from avatar_shared.token_estimate import WIDE

log = logging.getLogger("avatar.lorebook")

MAX_ENTRIES = 500
MAX_KEYS = 64  # per list: keys, secondary_keys
MAX_BOOK_KEYS = 2000  # in all the entries: each is tried on every turn
MAX_BOOK_CHARS = 200_000  # of all the entries' content: a book is kept with its character
MAX_LABEL_CHARS = 100  # how much of a name or comment a receipt shows
# SillyTavern's extensions a prompt reads: where an entry goes (at a depth, in a role), how its
# secondary keys count, how its keys match, whether an activated entry goes in (its chance, its
# inclusion group) and how it takes part in recursive scanning.
PROMPT_EXTENSIONS = (
    "position", "depth", "role", "selectiveLogic", "case_sensitive", "match_whole_words",
    "useProbability", "probability", "group", "group_override", "group_weight", "use_group_scoring",
    "prevent_recursion", "exclude_recursion", "delay_until_recursion",
)  # fmt: skip
GROUP_WEIGHT = 100  # SillyTavern's DEFAULT_WEIGHT, an entry's `group_weight` when it has none
MAX_KEY_CHARS = 200  # a regex key too: a long pattern is refused before it is compiled
# The regex module unrolls counted repeats as it compiles: `(?:a{65535}){65535}` (22 characters)
# grows without bound, `(?:a{100}){100}` costs about 1.4 MB and 2 ms. A regex key is refused
# before it is compiled when one of its counts ({n}, {m,n}, {m,}) is over MAX_REPEAT or its
# repeats unroll to more than MAX_KEY_REPEATS copies; a book's regex keys unroll to at most
# MAX_BOOK_REPEATS in all (about 15 MB and 30 ms to compile them all).
MAX_REPEAT = 1000
MAX_KEY_REPEATS = 10_000
MAX_BOOK_REPEATS = 100_000
MAX_CONTENT_CHARS = 8000
MAX_NAME_CHARS = 200
MAX_SCAN_DEPTH = 100
MAX_TOKEN_BUDGET = 1_000_000

Key = Annotated[str, Field(max_length=MAX_KEY_CHARS)]
# JsonInt with bounds, written ahead of its validator so that the JSON Schema shows them
# (given to the field of a `JsonInt | None`, they reach it as "ge"/"le", which no client reads).
ScanDepth = Annotated[
    int, Field(ge=0, le=MAX_SCAN_DEPTH), BeforeValidator(integral_float), Strict()
]
TokenBudget = Annotated[
    int, Field(ge=0, le=MAX_TOKEN_BUDGET), BeforeValidator(integral_float), Strict()
]

# SillyTavern's `selectiveLogic`: how an entry's secondary keys count (world_info_logic).
AND_ANY, NOT_ALL, NOT_ANY, AND_ALL = range(4)


class LoreEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: list[Key] = Field(default_factory=list, max_length=MAX_KEYS)
    content: str = Field("", max_length=MAX_CONTENT_CHARS)
    extensions: dict[str, Any] = Field(default_factory=dict)
    enabled: StrictBool = True
    insertion_order: JsonInt = 100  # lower first, among the entries of one place
    case_sensitive: StrictBool | None = None
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    priority: JsonInt | None = None  # when the budget is short, the lowest goes first
    id: StrictInt | StrictStr | None = None  # strict: `false` is no id (JSON Schema agrees)
    comment: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    selective: StrictBool | None = None  # a secondary key must match too
    secondary_keys: list[Key] = Field(default_factory=list, max_length=MAX_KEYS)
    constant: StrictBool | None = None  # always in
    position: Literal["before_char", "after_char"] | None = None
    use_regex: StrictBool | None = None  # V3: every key is a regular expression

    @property
    def every_key_a_regex(self) -> bool:
        """V3's `use_regex`. SillyTavern writes `use_regex: true` on every entry it exports,
        yet reads a key as a regex only when written `/pattern/flags`; its entries are told
        by the `selectiveLogic` its export always writes (convertWorldInfoToCharacterBook)."""
        return bool(self.use_regex) and not self.written_by_sillytavern

    @property
    def keys_case_sensitive(self) -> bool:
        """SillyTavern's own setting when it has one (it reads no other), else V2's field."""
        setting = self._st_setting("case_sensitive")
        return bool(self.case_sensitive) if setting is None else setting

    @property
    def whole_words(self) -> bool | None:
        """SillyTavern's `match_whole_words`; None: by the key's script (see _matcher)."""
        return self._st_setting("match_whole_words")

    @property
    def written_by_sillytavern(self) -> bool:
        """SillyTavern's card export writes `selectiveLogic` on every entry it converts
        (convertWorldInfoToCharacterBook): its keys are then read as SillyTavern reads them."""
        return "selectiveLogic" in self.extensions

    @property
    def selective_logic(self) -> int | None:
        """SillyTavern's `selectiveLogic` (absent or null: AND ANY). None for a value it knows
        none of: it compares with `===`, so such an entry never fires on its secondary keys."""
        logic = self.extensions.get("selectiveLogic")
        if logic is None:
            return AND_ANY
        if isinstance(logic, bool) or logic not in (AND_ANY, NOT_ALL, NOT_ANY, AND_ALL):
            return None
        return int(logic)  # JSON's 1.0 is JavaScript's 1

    @property
    def chance(self) -> float | None:
        """SillyTavern's `useProbability` and `probability`: the chance in 100 that the entry,
        once activated, goes in; None: always. As convertCharacterBook reads them, absent they
        are true and 100, and a `probability` that is no number counts as absent."""
        use = self.extensions.get("useProbability")
        chance = self._st_number("probability")
        if (use is not None and use in (False, 0, "")) or chance is None or chance >= 100:
            return None
        return chance

    @property
    def groups(self) -> list[str]:
        """SillyTavern's inclusion `group`: names split on commas (filterByInclusionGroups)."""
        group = self.extensions.get("group")
        return [name for name in re.split(r",\s*", group) if name] if isinstance(group, str) else []

    @property
    def group_override(self) -> bool:
        return bool(self._st_setting("group_override"))

    @property
    def group_scoring(self) -> bool:
        """SillyTavern's `use_group_scoring` (null: its global setting, off by default)."""
        return bool(self._st_setting("use_group_scoring"))

    @property
    def group_weight(self) -> float:
        """Its chance in its group's roll; a negative weight counts as none."""
        weight = self._st_number("group_weight")
        return GROUP_WEIGHT if weight is None else max(weight, 0.0)

    @property
    def prevents_recursion(self) -> bool:
        """SillyTavern's `prevent_recursion`: its content activates no other entry."""
        return bool(self._st_setting("prevent_recursion"))

    @property
    def excludes_recursion(self) -> bool:
        """SillyTavern's `exclude_recursion`: only the messages activate it, no entry's content."""
        return bool(self._st_setting("exclude_recursion"))

    @property
    def delayed(self) -> bool:
        """SillyTavern's `delay_until_recursion` (true, or a level from 1): activated only in a
        round of recursive scanning. Its levels are not told apart here."""
        delay = self.extensions.get("delay_until_recursion")
        return delay is True or bool(self._st_number("delay_until_recursion"))

    def _st_setting(self, name: str) -> bool | None:
        value = self.extensions.get(name)
        return value if isinstance(value, bool) else None  # null: the frontend's default

    def _st_number(self, name: str) -> float | None:
        value = self.extensions.get(name)
        return float(value) if isinstance(value, int | float) and type(value) is not bool else None

    @property
    def label(self) -> str:
        """How a receipt names the entry: its name, else its comment, else its id."""
        label = self.name or self.comment or ("" if self.id is None else str(self.id))
        return label[:MAX_LABEL_CHARS]


# The validation context of a book read back from the store (`model_validate(..., context=
# STORED)`): it was checked whole when it was written.
STORED_KEY = "stored_lorebook"
STORED = {STORED_KEY: True}


class Lorebook(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    scan_depth: ScanDepth | None = None
    token_budget: TokenBudget | None = None
    recursive_scanning: StrictBool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[LoreEntry] = Field(default_factory=list, max_length=MAX_ENTRIES)

    @model_validator(mode="after")
    def _bounded_and_compilable(self, info: ValidationInfo) -> "Lorebook":
        """What bounds a turn's work: keys and content in all, and every regex key compiles,
        at a bounded cost (a stored book never holds one that cannot run). A book read back
        from the store (context STORED) was checked when it was written: its regex keys are
        not compiled again (a listing reads many books; a turn compiles what it uses)."""
        keys = [(e, k) for e in self.entries for k in [*e.keys, *e.secondary_keys]]
        if len(keys) > MAX_BOOK_KEYS:
            raise ValueError(f"a lorebook has at most {MAX_BOOK_KEYS} keys in all")
        if sum(len(e.content) for e in self.entries) > MAX_BOOK_CHARS:
            raise ValueError(f"a lorebook's entries hold at most {MAX_BOOK_CHARS} characters")
        if not (info.context or {}).get(STORED_KEY):
            _check_regex_keys(keys)
        return self

    def for_prompt(self) -> "Lorebook":
        """The book without what no prompt uses (other frontends' fields and extensions), to
        keep in memory beside a character."""
        used = set(LoreEntry.model_fields) - {"extensions"}
        entries = [
            entry.model_dump(include=used)
            | {"extensions": {k: v for k, v in entry.extensions.items() if k in PROMPT_EXTENSIONS}}
            for entry in self.entries
        ]
        fields = self.model_dump(include={"scan_depth", "token_budget", "recursive_scanning"})
        # Checked already: its regex keys are not compiled again (a turn compiles them).
        return Lorebook.model_validate({**fields, "entries": entries}, context=STORED)

    def prepared(self) -> "Lorebook":
        """The book with its keys' matchers made (compiled): a caller that keeps the book
        (chat, with its character) makes them once, in a worker thread, so that no scan
        compiles them on an event loop or within its deadline."""
        _ = self.needles  # made from self.keyed
        return self

    @cached_property
    def keyed(self) -> "list[KeyedEntry]":
        """The entries with their keys' matchers, made once per book (a book is read again
        on every turn of a conversation)."""
        return [KeyedEntry.of(entry) for entry in self.entries]

    @cached_property
    def with_macros(self) -> list[int]:
        """The entries with a macro in a key: their matchers are made for each prompt's
        names (rare: the others' are made once per book)."""
        return [
            index
            for index, entry in enumerate(self.entries)
            if any(MACRO.search(key) for key in [*entry.keys, *entry.secondary_keys])
        ]

    def keyed_for(self, expand: Callable[[str], str] | None) -> "list[KeyedEntry]":
        """The entries' matchers with `expand` (a prompt's macros) applied to the keys."""
        if expand is None or not self.with_macros:
            return self.keyed
        keyed = list(self.keyed)
        for index in self.with_macros:
            keyed[index] = KeyedEntry.of(self.entries[index], expand)
        return keyed

    @cached_property
    def needles(self) -> "tuple[list[tuple[str, int]], list[int]]":
        """(needle, entry) for every plain primary key, and the entries tried whatever the
        text (constant ones, those with a regex key or a macro): what a scan narrows down
        with."""
        plain: list[tuple[str, int]] = []
        always: list[int] = []
        for index, keyed in enumerate(self.keyed):
            regex_key = any(needle is None for _, needle, _ in keyed.keys)
            if keyed.entry.constant or regex_key or index in self.with_macros:
                always.append(index)
            else:
                plain += [(needle, index) for _, needle, _ in keyed.keys if needle is not None]
        return plain, always

    def candidates(self, text: "Scanned") -> list[int]:
        """The entries that may match `text`: a plain key matches only where its case-folded
        form occurs, which one pass over the needles tells (most entries end there)."""
        plain, always = self.needles
        folded = text.folded
        return sorted({index for needle, index in plain if needle in folded}.union(always))


# --- activation -----------------------------------------------------------------------------

REGEX_TIMEOUT_S = 0.01  # per key and text: a pattern that backtracks for longer is dropped
MAX_RECURSION = 3  # rounds of recursive scanning past the first
MAX_RECURSION_CHARS = 20_000  # of activated content scanned in one round
# A turn's whole scan: past it, the entries not yet tried are not tried (and it is logged).
ACTIVATION_DEADLINE_S = 0.05
DECORATOR = re.compile(r"@@(\w+)(?:[ \t]+(\S+))?")
ROLES = ("system", "user", "assistant")
Place = Literal["before_char", "after_char", "depth"]
Reason = Literal[
    "disabled", "secondary_key_missing", "budget", "bad_regex", "probability", "group", "delayed"
]


@dataclass(frozen=True)
class Fired:
    """An entry that goes into the prompt, and where."""

    index: int  # its place in the book's entries
    entry: LoreEntry
    key: str  # the key that matched ("" for a constant entry)
    place: Place
    depth: int  # with place "depth": how many messages from the end
    role: str  # with place "depth": the message's role
    text: str  # its content without decorators
    tokens: int


@dataclass(frozen=True)
class Skipped:
    """An entry that matched, or was constant, but was left out, and why."""

    index: int
    entry: LoreEntry
    reason: Reason


@dataclass(frozen=True)
class Activation:
    fired: list[Fired]  # in insertion order
    skipped: list[Skipped]

    def report(self) -> "tuple[list[LoreUsed], list[LoreLeftOut]]":
        """The activation as a receipt's lists (chat's reply, the lorebook dry run)."""
        used = [
            LoreUsed(
                index=f.index,
                entry=f.entry.label,
                key=f.key,
                place=f.place,
                depth=f.depth if f.place == "depth" else None,
                tokens=f.tokens,
            )
            for f in self.fired
        ]
        left_out = [
            LoreLeftOut(index=s.index, entry=s.entry.label, reason=s.reason) for s in self.skipped
        ]
        return used, left_out


class LoreUsed(BaseModel):
    """An entry that went into the prompt, and where."""

    index: int = Field(description="Its place in the lorebook's entries, from 0.")
    entry: str = Field(description="The entry's name, else its comment, else its id.")
    key: str = Field(description="The key that matched (empty for a constant entry).")
    place: Place
    depth: int | None = Field(description="With place `depth`: messages from the end.")
    tokens: int = Field(description="Its content's estimated tokens.")


class LoreLeftOut(BaseModel):
    index: int
    entry: str
    reason: Reason = Field(
        description="Matched (or constant) but left out: disabled, its secondary keys not "
        "found as it asks (any, else SillyTavern's `selectiveLogic`), past the lore's token "
        "budget, a regex key that does not compile or ran too long, its SillyTavern "
        "`probability` roll failed, another entry of its inclusion `group` went in, or "
        "(`delayed`) its `delay_until_recursion` waited for a round of recursive scanning "
        "that never came."
    )


def activate(
    book: Lorebook,
    texts: list[str],
    scan_depth: int,
    budget: int,
    tokens: Callable[[str], int],
    expand: Callable[[str], str] | None = None,
    rng: random.Random | None = None,
) -> Activation:
    """The entries `texts` (the conversation's messages, newest last) activate. The book's
    `scan_depth` and `token_budget`, where it sets them, win over the callers' defaults.
    `expand` gives keys' macros their names (`{{char}}` fires on the character's name), as
    SillyTavern does. `rng` rolls SillyTavern's probabilities and inclusion groups (seeded,
    a turn can be replayed; None: a fresh one)."""
    window = _window(book, texts, scan_depth)
    keyed = book.keyed_for(expand)  # before the deadline: the scan's time is the scan's
    deadline = time.monotonic() + ACTIVATION_DEADLINE_S
    matched, skipped = _matches(book, keyed, Scanned.of(window), deadline)
    # A delayed entry waits for a round of recursion (the messages may activate it there).
    waiting = {i: key for i, key in matched.items() if book.entries[i].delayed}
    held = [s for s in skipped if s.entry.delayed and s.reason != "disabled"]
    skipped = [s for s in skipped if not s.entry.delayed or s.reason == "disabled"]
    rng = random.Random() if rng is None else rng
    first = {i: k for i, k in matched.items() if i not in waiting}
    scorer = _scorer(keyed, Scanned.of(window), deadline)
    matched, left_out = _kept(book, first, {}, rng, scorer)
    skipped += left_out
    if book.recursive_scanning:
        waiting = _scan_recursively(book, keyed, matched, skipped, deadline, rng, waiting)
    # What the messages activated but no round of recursion came for, and what they left
    # out that no round told of again: every entry they touched says why it is not in.
    skipped += [Skipped(i, book.entries[i], "delayed") for i in waiting]
    told = set(matched) | {s.index for s in skipped}
    skipped += [s for s in held if s.index not in told]
    if book.token_budget is not None:  # a book may ask for less than the callers give, not more
        budget = min(budget, book.token_budget)
    fired = [_fired(book.entries[i], i, key, tokens) for i, key in matched.items()]
    kept, over = _within(fired, budget)
    skipped += [Skipped(f.index, f.entry, "budget") for f in over]
    kept.sort(key=lambda f: (f.entry.insertion_order, f.index))
    return Activation(kept, sorted(skipped, key=lambda s: s.index))


def _window(book: Lorebook, texts: list[str], scan_depth: int) -> str:
    """The messages keys are looked for in. A book's own `scan_depth` counts as SillyTavern's
    (WorldInfoBuffer.get: the last N messages, the new one among them; 0, none: only constant
    entries and recursion); the callers' (LORE_SCAN_DEPTH) is the new message and as many
    before it."""
    count = book.scan_depth if book.scan_depth is not None else scan_depth + 1
    return "\n".join(texts[max(len(texts) - count, 0) :]) if count else ""


def _matches(
    book: Lorebook,
    keyed_entries: "list[KeyedEntry]",
    text: "Scanned",
    deadline: float,
    skip: Iterable[int] = (),
) -> tuple[dict[int, str], list[Skipped]]:
    matched: dict[int, str] = {}
    skipped: list[Skipped] = []
    for index in book.candidates(text):
        keyed = keyed_entries[index]
        entry = keyed.entry
        if index in skip:
            continue
        if time.monotonic() > deadline:
            log.warning("lorebook scan cut short at entry %d of %d", index, len(book.entries))
            break
        try:
            key = "" if entry.constant else first_match(keyed.keys, text)
            if key is None:
                continue
            if not entry.enabled:
                skipped.append(Skipped(index, entry, "disabled"))
                continue
            if entry.selective and keyed.secondary_keys and not entry.constant:
                if not secondary_keys_agree(keyed, text):
                    skipped.append(Skipped(index, entry, "secondary_key_missing"))
                    continue
        except BadRegex:
            skipped.append(Skipped(index, entry, "bad_regex"))
            continue
        matched[index] = key
    return matched, skipped


def _scan_recursively(
    book: Lorebook,
    keyed: "list[KeyedEntry]",
    matched: dict[int, str],
    skipped: list[Skipped],
    deadline: float,
    rng: random.Random,
    waiting: dict[int, str],
) -> dict[int, str]:
    """Activated content may activate other entries, a few rounds deep, none twice. As in
    SillyTavern (checkWorldInfo): the content of a `prevent_recursion` entry is not scanned,
    an `exclude_recursion` entry is not activated by content, and a delayed one (`waiting`,
    which the messages activated) goes in at the first round, if there is one (SillyTavern
    scans the messages again with the content). Returns those of `waiting` no round came for."""
    new = dict(matched)
    for _ in range(MAX_RECURSION):
        recursing = [i for i in new if not book.entries[i].prevents_recursion]
        if not recursing:
            return waiting
        text = "\n".join(strip_decorators(book.entries[i].content)[0] for i in recursing)
        done = set(matched) | {s.index for s in skipped}
        scanned = Scanned.of(text[:MAX_RECURSION_CHARS])
        found, more_skipped = _matches(book, keyed, scanned, deadline, skip=done)
        found = {i: k for i, k in found.items() if _by_content(book.entries[i])}
        found = dict(sorted((waiting | found).items()))
        waiting = {}
        new, left_out = _kept(book, found, matched, rng, _scorer(keyed, scanned, deadline))
        matched.update(new)
        skipped += [
            s for s in more_skipped if s.index not in done | set(found) and _by_content(s.entry)
        ]
        skipped += left_out
    return waiting


def _by_content(entry: LoreEntry) -> bool:
    """Whether another entry's content may activate it (a constant one is in already)."""
    return not entry.constant and not entry.excludes_recursion


def _kept(
    book: Lorebook,
    found: dict[int, str],
    activated: dict[int, str],
    rng: random.Random,
    score: "Scorer",
) -> tuple[dict[int, str], list[Skipped]]:
    """Of the entries a round of scanning activated, those that go in, as SillyTavern keeps
    them (checkWorldInfo): one of each inclusion group, then each by its probability. One
    whose group's scoring did not reach it before the scan's deadline is not tried, as
    `_matches` leaves one it had no time for: not in, and not in the receipt (logged)."""
    losers, unscored = _group_losers(book, list(found), activated, rng, score)
    if unscored:
        log.warning("lorebook group scoring cut short: %d entries not tried", len(unscored))
    kept: dict[int, str] = {}
    skipped = [Skipped(i, book.entries[i], "group") for i in sorted(losers)]
    for index, key in found.items():
        entry = book.entries[index]
        if index in losers or index in unscored:
            continue
        # SillyTavern's roll passes at `roll <= probability`: `<` makes 0 never, not almost.
        if entry.chance is not None and rng.random() * 100 >= entry.chance:
            skipped.append(Skipped(index, entry, "probability"))
        else:
            kept[index] = key
    return kept, skipped


def _group_losers(
    book: Lorebook,
    found: list[int],
    activated: dict[int, str],
    rng: random.Random,
    score: "Scorer",
) -> tuple[set[int], set[int]]:
    """The entries of an inclusion group that go out (filterByInclusionGroups): all of a group
    one of whose entries went in at an earlier round, else all but one. An entry in several
    groups is out when it loses in any. Besides, those its scoring had no time for (see
    `_scorer`), left out of the draw."""
    groups: dict[str, list[int]] = {}
    for index in found:
        for name in book.entries[index].groups:
            groups.setdefault(name, []).append(index)
    taken = {name for index in activated for name in book.entries[index].groups}
    losers: set[int] = set()
    unscored: set[int] = set()
    for name, members in groups.items():
        if name in taken:
            losers.update(members)
        elif len(members) > 1:
            outscored, late = _outscored(book, members, score)
            members = [i for i in members if i not in outscored and i not in late]
            winner = _group_winner([book.entries[i] for i in members], rng)
            losers.update(i for n, i in enumerate(members) if n != winner)
            losers.update(outscored)
            unscored.update(late)
    return losers, unscored - losers  # a loser of one group is out whatever another's


def _outscored(book: Lorebook, members: list[int], score: "Scorer") -> tuple[set[int], set[int]]:
    """SillyTavern's group scoring (filterGroupsByScoring), asked by an entry's
    `use_group_scoring`: those that ask for it and match fewer keys than the best of the
    group go out before the draw. Besides, the members not scored before the deadline: they
    are out of the contest (the best is of those scored)."""
    scored = [i for i in members if book.entries[i].group_scoring]
    if not scored:
        return set(), set()
    scores = {i: score(i) for i in members}
    known = {i: s for i, s in scores.items() if s is not None}
    best = max(known.values(), default=0)
    return {i for i in scored if i in known and known[i] < best}, set(scores) - set(known)


# An entry's score (`_score`), None past the scan's deadline: it was not scored.
Scorer = Callable[[int], int | None]


def _scorer(keyed: "list[KeyedEntry]", text: "Scanned", deadline: float) -> Scorer:
    """Scoring runs every key of every member of a group (regex keys too): a large book may
    spend the scan's time there, so past its deadline an entry is not scored, as `_matches`
    tries no more entries past it."""

    def score(index: int) -> int | None:
        return None if time.monotonic() > deadline else _score(keyed[index], text)

    return score


def _score(keyed: "KeyedEntry", text: "Scanned") -> int:
    """How many of an entry's keys `text` holds, as SillyTavern scores it
    (WorldInfoBuffer.getScore): its secondary keys count too under AND ANY, and under AND ALL
    when all are found. A regex key that fails counts as not found."""
    if not keyed.keys:
        return 0
    primary, secondary = _found_count(keyed.keys, text), _found_count(keyed.secondary_keys, text)
    logic = keyed.entry.selective_logic
    if logic == AND_ANY or (logic == AND_ALL and secondary == len(keyed.secondary_keys)):
        return primary + secondary
    return primary


def _found_count(keys: "list[KeyTest]", text: "Scanned") -> int:
    count = 0
    for test in keys:
        try:
            count += _found(test, text)
        except BadRegex:
            pass
    return count


def _group_winner(entries: list[LoreEntry], rng: random.Random) -> int:
    """Which of a group's entries goes in: of those with `group_override`, the highest in
    `insertion_order` (SillyTavern's `order`; the first of equals), else one drawn at random,
    weighted by `group_weight`."""
    overriding = [n for n, entry in enumerate(entries) if entry.group_override]
    if overriding:
        return min(overriding, key=lambda n: -entries[n].insertion_order)
    weights = [entry.group_weight for entry in entries]
    roll = rng.random() * sum(weights)
    for n, weight in enumerate(weights):
        roll -= weight
        if roll < 0:
            return n
    return 0 if not sum(weights) else len(weights) - 1  # all weigh nothing: the first, as there


def _within(fired: list[Fired], budget: int) -> tuple[list[Fired], list[Fired]]:
    """The entries that fit `budget` tokens: when they do not all fit, those of the lowest
    priority go first, then (in SillyTavern's order, whose cards set no priority) the lowest
    in insertion order. Unlike SillyTavern, which stops at the first that does not fit, a
    smaller one further down that still fits is kept."""
    by_worth = sorted(
        fired, key=lambda f: (-(f.entry.priority or 0), -f.entry.insertion_order, f.index)
    )
    kept, over, used = [], [], 0
    for item in by_worth:
        if used + item.tokens <= budget:
            kept.append(item)
            used += item.tokens
        else:
            over.append(item)
    return kept, over


def _fired(entry: LoreEntry, index: int, key: str, tokens: Callable[[str], int]) -> Fired:
    text, decorators = strip_decorators(entry.content)
    depth = _depth(entry, decorators)
    place: Place = "depth" if depth is not None else (entry.position or "before_char")
    return Fired(index, entry, key, place, depth or 0, _role(entry, decorators), text, tokens(text))


def _role(entry: LoreEntry, decorators: dict[str, str]) -> str:
    """`@@role`, else SillyTavern's `extensions.role` (0 system, 1 user, 2 assistant)."""
    role = decorators.get("role")
    if role is None:
        number = entry.extensions.get("role")
        role = ROLES[number] if type(number) is int and 0 <= number < len(ROLES) else "system"
    return role if role in ROLES else "system"


def _depth(entry: LoreEntry, decorators: dict[str, str]) -> int | None:
    """`@@depth N`, else SillyTavern's `extensions.depth` where its position says "at depth"
    (4); a value that is not a small number counts as none."""
    value: object = decorators.get("depth")
    if value is None and entry.extensions.get("position") == 4:
        value = entry.extensions.get("depth")
    try:
        depth = int(str(value))
    except ValueError:
        return None
    return depth if 0 <= depth <= MAX_SCAN_DEPTH else None


def strip_decorators(content: str) -> tuple[str, dict[str, str]]:
    """V3 decorators are the `@@name value` lines that open an entry's content: they say how
    to insert it, and are not part of it. Unknown ones are read and ignored."""
    decorators: dict[str, str] = {}
    lines = content.split("\n")
    while lines and (found := DECORATOR.fullmatch(lines[0].strip())):
        decorators[found.group(1).lower()] = found.group(2) or ""
        lines.pop(0)
    return "\n".join(lines).strip(), decorators


# --- matching a key -------------------------------------------------------------------------


class BadRegex(Exception):
    """A regex key that does not compile, or runs past REGEX_TIMEOUT_S."""


class CostlyRegex(BadRegex):
    """A regex key that would cost too much to compile (see MAX_REPEAT)."""


@dataclass(frozen=True)
class Scanned:
    """A text keys are matched in, and its case-folded form (made once, for every key)."""

    text: str
    folded: str

    @classmethod
    def of(cls, text: str) -> "Scanned":
        return cls(text, text.casefold())


Matcher = Callable[[Scanned], bool]


# A key, what must occur in the case-folded text for it to match (None: a regex key; it
# is a cheap test that rules out most keys before their matcher runs), and its matcher.
KeyTest = tuple[str, str | None, Matcher]


@dataclass(frozen=True)
class KeyedEntry:
    entry: LoreEntry
    keys: list[KeyTest]
    secondary_keys: list[KeyTest]

    @classmethod
    def of(cls, entry: LoreEntry, expand: Callable[[str], str] | None = None) -> "KeyedEntry":
        """`expand`: a prompt's macros, for keys that name `{{char}}` or `{{user}}`; the
        receipt names the key as written."""

        def tests(keys: list[str]) -> list[KeyTest]:
            expanded = [(key, _expanded(key, entry, expand)) for key in keys]
            return [
                (key, *_key_test(text, entry, plain=_regex_key(key, entry) is None))
                for key, text in expanded
            ]

        primary = [test for test in tests(entry.keys) if test[1] != ""]  # a blank one: never
        # A blank secondary key is one that is never found, as in SillyTavern (it counts the
        # list's length, then finds no blank): under NOT ANY it does not stop the entry.
        return cls(entry, primary, tests(entry.secondary_keys))


def _expanded(key: str, entry: LoreEntry, expand: Callable[[str], str] | None) -> str:
    """`key` with its macros given their names; in a regex key, as literal text: a name
    holding `(`, `{1000}` or `.` must not change what the pattern is, nor what it costs
    (the book's bounds were checked on the key as written)."""
    if expand is None:
        return key
    if _regex_key(key, entry) is None:
        return expand(key)
    return MACRO.sub(lambda found: regex.escape(expand(found[0])), key)


def first_match(keys: list[KeyTest], text: Scanned) -> str | None:
    """The first key found in `text`."""
    return next((test[0] for test in keys if _found(test, text)), None)


def secondary_keys_agree(keyed: KeyedEntry, text: Scanned) -> bool:
    """An entry's secondary keys, as SillyTavern's `selectiveLogic` counts them."""
    found = (_found(test, text) for test in keyed.secondary_keys)
    logic = keyed.entry.selective_logic
    if logic is None:
        return False
    if logic == NOT_ALL:
        return not all(found)
    if logic == NOT_ANY:
        return not any(found)
    if logic == AND_ALL:
        return all(found)
    return any(found)


def _found(test: KeyTest, text: Scanned) -> bool:
    _, needle, matches = test
    return (needle is None or needle in text.folded) and matches(text)


def _key_test(key: str, entry: LoreEntry, plain: bool = False) -> tuple[str | None, Matcher]:
    """What must occur in the case-folded text for `key` to match (None for a regex key, ""
    for a blank one), and its matcher. `plain`: a plain key as written, whose macros were
    expanded: plain text whatever a name made it look like (a persona named `/(a{1000})/`)."""
    if not key.strip():
        return "", _never
    try:
        pattern = None if plain else _as_regex(key, entry)
    except BadRegex as exc:  # a stored key compiles; one whose macros were expanded may not
        return None, _never_runs(exc)
    if pattern is not None:
        return None, lambda scanned: _search(pattern, scanned.text)
    return key.strip().casefold(), _plain_matcher(key, entry)


def _plain_matcher(key: str, entry: LoreEntry) -> Matcher:
    case_sensitive = entry.keys_case_sensitive
    key = key.strip() if case_sensitive else key.strip().casefold()
    if entry.whole_words is None:  # ours: Korean particles attach, "숲" fires on "숲에서"
        bounded = None if WIDE.search(key) else rf"(?<!\w){re.escape(key)}(?!\w)"
    else:  # SillyTavern's own setting, as it reads it
        bounded = _sillytavern_whole_word(key) if entry.whole_words else None
    if bounded is None:
        return lambda scanned: key in (scanned.text if case_sensitive else scanned.folded)
    whole_word = re.compile(bounded)  # linear, and in C
    return lambda scanned: bool(
        whole_word.search(scanned.text if case_sensitive else scanned.folded)
    )


def _sillytavern_whole_word(key: str) -> str | None:
    """SillyTavern's whole-word match (matchKeys): a key of several words is found anywhere;
    one word needs a boundary on each side that is no ASCII letter, digit or underscore (its
    JavaScript \\W), so "숲" is a whole word in "숲에서" there too."""
    if len(key.split()) > 1:
        return None
    return rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])"


def _never(scanned: Scanned) -> bool:
    return False


def _never_runs(error: "BadRegex") -> Matcher:
    def refuse(scanned: Scanned) -> bool:
        raise error

    return refuse


SLASHED = re.compile(r"/(.+)/([imsu]*)", re.DOTALL)  # "/usr/bin" is no regex: b, n no flags
# As SillyTavern tells a regex key (parseRegexFromString), with JavaScript's `g` (nothing for a
# test) but not `y` (sticky: anchored where SillyTavern's scan text starts, which ours does not).
SILLYTAVERN_SLASHED = re.compile(r"/(.+)/([gimsu]*)", re.DOTALL)


def _slashed(key: str, entry: LoreEntry) -> "re.Match[str] | None":
    pattern = SILLYTAVERN_SLASHED if entry.written_by_sillytavern else SLASHED
    return pattern.fullmatch(key)


@dataclass(frozen=True)
class RegexKey:
    """A key read as a regex: its pattern, the regex module's options, and whether it is read
    as SillyTavern reads it (lenient: a pattern it cannot use is plain text, not refused)."""

    source: str
    options: int
    lenient: bool


def _regex_key(key: str, entry: LoreEntry) -> RegexKey | None:
    """A regex key (written `/pattern/flags`, or any key of a `use_regex` entry); None for a
    plain one. Written with slashes, its flags alone say whether case counts, as in
    SillyTavern (a JavaScript RegExp)."""
    slashed = _slashed(key, entry)
    if not entry.every_key_a_regex and not slashed:
        return None
    if slashed:
        source, flags = slashed.group(1), slashed.group(2)
        ignore_case = "i" in flags
    else:
        source, flags, ignore_case = key, "", not entry.keys_case_sensitive
    lenient = bool(slashed) and entry.written_by_sillytavern
    if lenient and len(set(flags)) < len(flags):
        return None  # JavaScript refuses a repeated flag
    options = regex.IGNORECASE if ignore_case else 0
    options |= regex.MULTILINE if "m" in flags else 0
    options |= regex.DOTALL if "s" in flags else 0
    return RegexKey(source, options, lenient)


def _as_regex(key: str, entry: LoreEntry) -> "regex.Pattern[str] | None":
    """A regex key compiled; None for a plain one. In an entry SillyTavern wrote, a slashed
    key it could not use (JavaScript refuses it, or it costs too much here) is plain text,
    as SillyTavern reads one JavaScript refuses; in any other, it is refused (BadRegex),
    since its writer meant a regex."""
    found = _regex_key(key, entry)
    if found is None:
        return None
    try:
        return _compiled(found)
    except BadRegex:
        if found.lenient:
            return None
        raise


def _compiled(found: RegexKey) -> "regex.Pattern[str]":
    """Costed before it is compiled (CostlyRegex past the bounds): a key then compiles in a
    few milliseconds at most (a whole book of long keys may take a second or two: callers
    that can run it in a worker thread do)."""
    _repeats(found.source)
    try:
        # Not kept in the module's cache (500 patterns, each up to a megabyte or so at the
        # bounds, held for good): a book keeps its own matchers (`Lorebook.keyed`).
        return regex.compile(found.source, found.options, cache_pattern=False)
    except (regex.error, OverflowError) as exc:
        raise BadRegex(str(exc)) from exc
    except (MemoryError, RecursionError) as exc:  # past what the bounds foresee: refused
        raise CostlyRegex(f"compiling it takes too much memory ({type(exc).__name__})") from exc


def _check_regex_keys(keys: list[tuple[LoreEntry, str]]) -> None:
    """Every regex key is costed, then (the book's total within MAX_BOOK_REPEATS) compiled:
    ValueError for one that is refused."""
    regexes = [(key, found) for entry, key in keys if (found := _regex_key(key, entry))]
    total = 0
    for key, found in regexes:
        try:
            total += _repeats(found.source)
        except CostlyRegex as exc:
            if not found.lenient:  # a lenient one is plain text: it costs nothing
                raise ValueError(f"the regex key {key[:50]!r} is too costly: {exc}") from exc
    if total > MAX_BOOK_REPEATS:
        raise ValueError(
            f"a lorebook's regex keys unroll their counted repeats ({{n}}) to at most "
            f"{MAX_BOOK_REPEATS} copies in all; these unroll to {total}"
        )
    for key, found in regexes:
        try:
            _compiled(found)
        except CostlyRegex as exc:
            if not found.lenient:
                raise ValueError(f"the regex key {key[:50]!r} is too costly: {exc}") from exc
        except BadRegex as exc:
            if not found.lenient:
                raise ValueError(f"the regex key {key[:50]!r} does not compile: {exc}") from exc


# A counted repeat as the regex module reads one: {n}, {m,n}, {m,}, {,n}.
COUNTED = re.compile(r"\{(\d*)(,?)(\d*)\}")
# What the regex module may read as a fuzzy constraint: braces naming an error kind or a bound.
FUZZY = re.compile(r"\{[^}]*[deis<][^}]*\}")
# What opens a group past its "(" and is no item of it, of what JavaScript knows: ?:, ?=, ?!,
# ?<=, ?<!, ?<name>.
GROUP_PREFIX = re.compile(r"\?(?:<[=!]|[:=!]|<[A-Za-z_$][\w$]*>)")
NAMED_ESCAPE = re.compile(r"\\[pPNx]\{[^}]*\}")  # \p{Greek}, \N{...}, \x{263a}: no repeat


def _repeats(source: str) -> int:
    """How many copies `source`'s counted repeats add when the regex module unrolls them:
    what a count repeats (an item, or a group's items and their own copies) times the count
    less one, nested repeats multiplied. CostlyRegex past MAX_REPEAT or MAX_KEY_REPEATS. A
    reading of the pattern that may count more than the regex module makes (a `{` in a
    comment, say), never less."""
    source = MACRO.sub("x", source)  # a macro's name is literal text there (`_expanded`)
    inside = [0]  # per open group: its items and the copies made of them
    added = 0  # copies made in all
    size, at = 1, 0  # what a count would repeat: an item, or a group
    while at < len(source):
        char, step = source[at], 1
        if named := NAMED_ESCAPE.match(source, at):
            step = len(named[0])
        elif char == "\\":
            step = 2
        elif char == "[":
            step = _set_end(source, at) - at
        elif char == "(":
            inside.append(0)
            size, at = 1, _group_start(source, at)
            continue
        elif char == ")" and len(inside) > 1:
            size = max(inside.pop(), 1)
            inside[-1] += size
            at += 1
            continue
        elif FUZZY.match(source, at):
            # The regex module's fuzzy constraint ({e<=0}, {i}): no element of its own, so a
            # count after it repeats what came before it. JavaScript has none.
            raise CostlyRegex(f"a fuzzy constraint JavaScript does not know: {source[at : at + 8]}")
        elif (counted := COUNTED.match(source, at)) and (counted[1] or counted[3]):
            count = max(int(counted[1] or 0), int(counted[3] or 0))
            if count > MAX_REPEAT:
                raise CostlyRegex(f"a count of {count} (at most {MAX_REPEAT})")
            copies = size * max(count - 1, 0)
            inside[-1] += copies
            added += copies
            size, at = size * max(count, 1), counted.end()
            continue
        elif char in "*+?|":  # no item: * + ? (a count's lazy ? too) repeat no more
            at += 1
            continue
        inside[-1] += 1  # an item: a character, an escape, a set
        size, at = 1, at + step
    if added > MAX_KEY_REPEATS:
        raise CostlyRegex(
            f"its counted repeats unroll to {added} copies (at most {MAX_KEY_REPEATS})"
        )
    return added


def _group_start(source: str, at: int) -> int:
    """Where the items of the group opened at `at` start. CostlyRegex for a group JavaScript
    does not know: inline flags (verbose mode reads spaced digits as a count), comments,
    atomic groups, recursion... hold no element, so a count after one repeats what came
    before it, past what this reading counts. No SillyTavern key needs them."""
    if prefix := GROUP_PREFIX.match(source, at + 1):
        return prefix.end()
    if source.startswith("?", at + 1):
        raise CostlyRegex(f"it opens a group JavaScript does not know: {source[at : at + 4]}")
    return at + 1


def _set_end(source: str, at: int) -> int:
    """Where the set opened at `at` ends (its first `]` may be a member). A nested set or a
    POSIX class ends it early here: what follows is then read as pattern, counted more."""
    at += 1
    at += source.startswith("^", at)
    at += source.startswith("]", at)
    while at < len(source) and source[at] != "]":
        at += 2 if source[at] == "\\" else 1
    return at + 1


def _search(pattern: "regex.Pattern[str]", text: str) -> bool:
    try:
        return pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError as exc:
        raise BadRegex("too slow") from exc
