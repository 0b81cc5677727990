"""Which long-term memories are relevant to a chat turn: Okapi BM25 over the memories' terms,
indexed once per set of memories and queried with the last messages of the conversation.

Terms. A text is NFKC-normalized and casefolded, then cut into runs of letters and digits of
one script:
- Latin (and any other script with spaces between words) and digits: words. A short list of
  English function words (`STOP_WORDS`) is dropped: they occur in nearly every memory and
  message, add little to a score, and lengthen every posting walk. English plurals and third
  persons are folded by Harman's "S" stemmer ("dogs" and "dog", "likes" and "like").
- Hangul: syllable bigrams ("민수는" -> "민수", "수는"; a one-syllable run is its own term).
  Korean attaches its particles to the word ("민수는", "민수가", "민수를"), so whole runs
  would rarely match across sentences; bigrams share the stem ("민수") whatever particle
  follows, and a compound matches its parts. They need no dictionary, no model and no
  dependency, and cut a 2,000-character query in about 0.3 ms. Measured against kiwipiepy
  0.24, a morphological analyzer that separates particles exactly (it installs from PyPI
  wheels, with a 105 MB model package), on a hand-labelled set of 30 Korean memories and 63
  chat lines (bench/memory_terms.py): the wanted memory ranked first for 90.5% of the lines
  with bigrams against 85.7% with its content morphemes (MRR 0.921 against 0.905), and
  kiwipiepy took 4-17 ms to cut an 800-2,000 character query, where a whole turn's ranking
  has 2 ms. The noise bigrams ("수는") weigh little: the common ones have a low IDF.
- Chinese characters and kana: one term per character (each is close to a word already).

Scores. BM25 with k1 = 1.2, b = 0.75 and IDF = ln(1 + (N - df + 0.5) / (df + 0.5)) over the
unpinned memories; a query term counts once, however often the conversation repeats it. As a
term's weight in a memory then depends on the memory alone, `build` computes it for every
(term, memory) posting, and `rank` only adds up the postings of the query's terms. Weights are
kept in fixed point (integers, about 2e7 per unit of score at 2,000 memories): the common
terms' postings can then be added up many memories at a time (see `_Postings`), and sums of
integers are exact, so equal scores tie whatever order the query's terms come in.
"""

import math
import re
import sys
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from itertools import compress
from operator import attrgetter
from typing import Generic, Protocol, TypeVar

__all__ = ["STOP_WORDS", "MemoryIndex", "Rankable", "terms"]

K1, B = 1.2, 0.75
# English words too common to tell one memory from another (most memories are about "the
# user"); "s" and "t" are what is left of "user's" and "don't" once the apostrophe splits them.
STOP_WORDS = frozenset(
    "a an the is are was were be am of to in on at for with and or but it its "
    "this that i me my you your user s t".split()
)
_HANGUL = "\uac00-\ud7a3"  # precomposed syllables (NFKC composes conjoining jamo into them)
_IDEOGRAPHS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana, CJK ideographs
# One pass of the regex engine per kind of term, rather than a Python step per run: a turn's
# query is up to 2,000 characters, and cutting it is a good part of the turn's work.
_BIGRAMS = re.compile(rf"(?=([{_HANGUL}]{{2}}))")  # every two neighbouring syllables
_LONE_SYLLABLES = re.compile(rf"(?<![{_HANGUL}])[{_HANGUL}](?![{_HANGUL}])")
_IDEOGRAPH = re.compile(rf"[{_IDEOGRAPHS}]")
# Runs of other letters and digits: not a non-word character, the underscore, nor the above.
_WORDS = re.compile(rf"[^\W_{_HANGUL}{_IDEOGRAPHS}]+")


class Rankable(Protocol):
    id: str  # unique memory id
    text: str  # the fact
    pinned: bool
    at: str  # ISO-8601 UTC time it was learned or last confirmed (newer wins ties)


M = TypeVar("M", bound=Rankable)


def terms(text: str) -> list[str]:
    """The index terms of a text: NFKC-normalized and casefolded, Hangul runs as syllable
    bigrams (a one-syllable run whole), Chinese characters and kana one by one, other words
    whole (English stop words dropped, plurals folded); repeats kept, grouped by kind."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    found: list[str] = _BIGRAMS.findall(folded)
    found += _LONE_SYLLABLES.findall(folded)
    found += _IDEOGRAPH.findall(folded)
    found += [_s_stem(word) for word in _WORDS.findall(folded) if word not in STOP_WORDS]
    return found


def _s_stem(word: str) -> str:
    """Harman's "S" stemmer (1991): -ies -> -y, -es -> -e, -s -> -, with its exceptions.
    Short words are left alone ("bus", "gas", "yes")."""
    if len(word) <= 3 or word[-1] != "s":
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith(("us", "ss")):
        return word
    return word[:-1]


class MemoryIndex(Generic[M]):
    """The memories of one (user, character), indexed for ranking: build it again when they
    change (the index keeps the objects it was given, and their terms as they were then)."""

    def __init__(self, pinned: list[M], unpinned: list[M], postings: "_Postings") -> None:
        self._pinned = pinned  # newest first
        self._unpinned = unpinned  # newest first: a document's number is its recency
        self._postings = postings
        # What `choose`'s cost function says of each memory, for the function last passed:
        # once the budget is nearly spent, the walk down the ranking goes on for smaller
        # memories, and costing 2,000 texts again each turn takes longer than ranking them.
        self._cost: Callable[[str], int] | None = None
        self._costs: list[int] = []  # by document number
        self._pinned_cost = 0
        # The smallest cost of an unpinned memory: when less is left, none can fit any more.
        self._cheapest = 0

    @classmethod
    def build(cls, memories: Sequence[M]) -> "MemoryIndex[M]":
        # Newest first (then by id, for a stable order): ties in rank keep this order.
        newest_first = sorted(memories, key=attrgetter("at", "id"), reverse=True)
        unpinned = [m for m in newest_first if not m.pinned]
        pinned = [m for m in newest_first if m.pinned]
        return cls(pinned, unpinned, _Postings([terms(m.text) for m in unpinned]))

    def rank(self, query: str) -> list[tuple[M, float]]:
        """Unpinned memories with a BM25 score > 0 for `query`, best first (ties: newer first)."""
        scores, scale = self._postings.scores(terms(query)), self._postings.scale
        return [(self._unpinned[d], scores[d] / scale) for d in _best_first(scores)]

    def choose(self, query: str, budget: int, cost: Callable[[str], int]) -> list[M]:
        """What goes into the prompt: every pinned memory first (always, even past the budget;
        newest first), then ranked ones while their cost (cost(m.text) tokens each) fits what is
        left of `budget`; a memory too large is skipped and smaller later ones still tried.
        Result in prompt order: pinned first, then by rank.

        `cost` must depend on the text alone: the index remembers what it said of each memory
        while the same function (by ==: a bound method of the same estimator counts as the
        same) is passed, turn after turn."""
        costs = self._costs_of(cost)
        chosen = list(self._pinned)
        left = budget - self._pinned_cost
        if left < self._cheapest:  # the pinned ones have taken it all
            return chosen
        for document in _best_first(self._postings.scores(terms(query))):
            if costs[document] <= left:
                chosen.append(self._unpinned[document])
                left -= costs[document]
                if left < self._cheapest:
                    break
        return chosen

    def _costs_of(self, cost: Callable[[str], int]) -> list[int]:
        """Each unpinned memory's cost, by document number: asked of `cost` the first time it
        is passed (a few microseconds per memory), then kept while the same one is."""
        if cost != self._cost:
            self._cost, self._costs = cost, [cost(m.text) for m in self._unpinned]
            self._pinned_cost = sum(cost(m.text) for m in self._pinned)
            self._cheapest = min(self._costs, default=0)
        return self._costs


def _best_first(scores: list[int]) -> list[int]:
    """The documents with a score, best first. They are numbered newest first and the sort is
    stable: ties stay newest first."""
    ranked = list(compress(range(len(scores)), scores))
    ranked.sort(key=scores.__getitem__, reverse=True)
    return ranked


class _Postings:
    """term -> the memories that have it, with its BM25 weight in each, in fixed point (an
    integer, `scale` per unit of score). The postings of a term found in many memories are
    packed into one big integer, each memory's weight in a 32-bit field at its number's
    place: adding the term to all of its memories at once is one addition of integers in C,
    where a Python step per memory costs about 40 ns (the common bigrams are in hundreds of
    memories of 2,000, and a turn's query has a hundred terms or more)."""

    FIELD_BYTES = 4
    assert array("I").itemsize == FIELD_BYTES  # "I" is 4 bytes wherever CPython runs
    PACKED_FROM = 48  # memories: fewer are cheaper walked one by one than a field per memory

    def __init__(self, documents: list[list[str]]) -> None:
        self.size = len(documents)
        weights = _weights(documents)
        # No memory's score can overflow its field: none exceeds the sum of its own weights,
        # which the scale makes half a field at most (the other half: room for rounding up).
        totals = [0.0] * self.size
        for by_document in weights.values():
            for document, weight in by_document.items():
                totals[document] += weight
        self.scale = 2**31 / (max(totals, default=0.0) or 1.0)
        self.packed: dict[str, int] = {}
        self.sparse: dict[str, tuple[list[int], list[int]]] = {}
        for term, by_document in weights.items():
            # At least 1: a memory that has the term keeps a score above 0.
            fixed = {d: int(w * self.scale) or 1 for d, w in by_document.items()}
            if len(fixed) >= self.PACKED_FROM:
                self.packed[term] = self._pack(fixed)
            else:
                self.sparse[term] = (list(fixed), list(fixed.values()))

    def _pack(self, fixed: dict[int, int]) -> int:
        fields = array("I", bytes(self.FIELD_BYTES * self.size))
        for document, weight in fixed.items():
            fields[document] = weight
        return int.from_bytes(fields.tobytes(), sys.byteorder)

    def scores(self, query: list[str]) -> list[int]:
        """Each memory's score, by document number (0: shares no query term). Each distinct
        query term counts once (set intersections: only the terms some memory has)."""
        distinct = set(query)
        packed = sum(self.packed[term] for term in self.packed.keys() & distinct)
        scores = array("I", packed.to_bytes(self.FIELD_BYTES * self.size, sys.byteorder)).tolist()
        for term in self.sparse.keys() & distinct:
            documents, weights = self.sparse[term]
            for document, weight in zip(documents, weights, strict=True):
                scores[document] += weight
        return scores


def _weights(documents: list[list[str]]) -> dict[str, dict[int, float]]:
    """term -> {document: the term's BM25 weight in it}."""
    if not documents:
        return {}
    # (1 when no memory has a term: "I am", "...!": the norms must not divide by 0.)
    average = sum(map(len, documents)) / len(documents) or 1.0
    counts: dict[str, dict[int, int]] = {}
    for number, document in enumerate(documents):
        for term in document:
            in_term = counts.setdefault(term, {})
            in_term[number] = in_term.get(number, 0) + 1
    # The length normalization of each document: k1 * (1 - b + b * |d| / avgdl).
    norms = [K1 * (1 - B + B * len(d) / average) for d in documents]
    weights = {}
    for term, frequencies in counts.items():
        idf = math.log(1 + (len(documents) - len(frequencies) + 0.5) / (len(frequencies) + 0.5))
        weights[term] = {d: idf * f * (K1 + 1) / (f + norms[d]) for d, f in frequencies.items()}
    return weights
