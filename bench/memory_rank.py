"""Ranking long-term memories for a chat turn (issue 28): 2,000 memories of one (user,
character), Korean and English facts of 5-25 words (some pinned), against the last 6 messages
of a Korean/English role-play conversation, a different window of it each turn. In-process:
no stack, no LLM.

Measured: (a) a turn's `MemoryIndex.choose` on an index built beforehand (what the chat
service does per turn while the memories do not change), with the chat service's own token
estimate as the cost; and the first turn with a new cost function, which the index asks once
for every memory's cost; (b) `MemoryIndex.build` of the 2,000 (what a turn pays once after
the memories changed); (c) the baseline, in the same run: a naive scan counting, for each
memory, the query's words it contains, and ranking by that count.

    make bench            (or: uv run python bench/memory_rank.py --turns 5000)

Target: (a) p99 <= 2 ms.
"""

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from loadgen import percentile

from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.memory.ranking import MemoryIndex

TARGET_P99_MS = 2.0
NAMES = ["민수", "지은", "서연", "하준", "도윤", "수아", "Alex", "Mina", "Jun", "Sora"]
KO_NOUNS = (
    "빵 커피 재즈 고양이 강아지 바다 산 여행 음악 영화 책 게임 축구 야구 피아노 기타 회사 학교 "
    "친구 동생 언니 엄마 아빠 할머니 생일 주말 아침 저녁 비 눈 봄 여름 가을 겨울 서울 부산 "
    "제주도 카페 도서관 공원 시장 김치찌개 떡볶이 라면 초밥 케이크 딸기 사과 우유 맥주 와인 "
    "사진 그림 노래 춤 요리 운동 수영 등산 자전거 지하철 버스 꽃 선물 편지 약속 시험 면접 "
    "프로젝트 발표 숙제 꿈 취미 이사 병원 감기 두통 반지 시계 가방 모자 안경 향수 일기 "
    "소설 만화 드라마 콘서트 전시회 바이올린 첼로 별 달 하늘 노을"
).split()
KO_PARTICLES = ["은", "는", "이", "가", "을", "를", "에", "에서", "와", "도", "의", "로", ""]
KO_VERBS = (
    "좋아한다 싫어한다 먹었다 마셨다 만났다 샀다 잃어버렸다 기억한다 약속했다 배우고있다 "
    "그리워한다 준비하고있다 보고싶어한다 키운다 다녀왔다 가져오기로했다 무서워한다 자랑했다"
).split()
EN_WORDS = (
    "coffee jazz cat dog sea mountain trip music movie book game soccer baseball piano guitar "
    "office school friend sister brother mother father grandmother birthday weekend morning "
    "evening rain snow spring summer autumn winter Seoul Busan Jeju cafe library park market "
    "ramen sushi cake strawberry apple milk beer wine photo drawing song dance cooking gym "
    "swimming hiking bicycle subway bus flower gift letter promise exam interview project "
    "presentation homework dream hobby moving hospital cold headache ring watch bag hat glasses "
    "perfume diary novel comic drama concert exhibition violin cello star moon sky sunset"
).split()
EN_VERBS = (
    "likes hates ate drank met bought lost remembers promised learns misses prepares wants "
    "keeps visited brings fears loves plays reads watches"
).split()
EN_GLUE = "the a to with and in on at for of every last next".split()
KO_CHAT = (
    "오늘은 정말 긴 하루였어 그래서 어떻게 됐어 진짜 대박 나도 그렇게 생각해 음 글쎄 "
    "너무 좋다 같이 가자 내일 보자 괜찮아 걱정하지 마 ㅋㅋㅋ 헐 정말이야"
).split()
EN_CHAT = "you know I think so really wow okay sure maybe tomorrow tonight what happened".split()


@dataclass
class Memory:
    id: str
    text: str
    pinned: bool
    at: str


def zipf(rng: random.Random, words: list[str]) -> str:
    """A word, the first of the list the most often (as in real text)."""
    return rng.choices(words, weights=[1 / (rank + 1) for rank in range(len(words))])[0]


def korean_fact(rng: random.Random, length: int) -> str:
    words = [f"{rng.choice(NAMES)}{rng.choice(['는', '의', '가'])}"]
    while len(words) < length - 1:
        words.append(zipf(rng, KO_NOUNS) + rng.choice(KO_PARTICLES))
    return " ".join([*words, rng.choice(KO_VERBS)])


def english_fact(rng: random.Random, length: int) -> str:
    words = ["The user" if rng.random() < 0.5 else rng.choice(NAMES), rng.choice(EN_VERBS)]
    while len(words) < length:
        words.append(rng.choice(EN_GLUE) if rng.random() < 0.3 else zipf(rng, EN_WORDS))
    return " ".join(words)


def memories(count: int, pinned: int, rng: random.Random) -> list[Memory]:
    made = []
    for i in range(count):
        length = rng.randint(5, 25)
        text = korean_fact(rng, length) if rng.random() < 0.6 else english_fact(rng, length)
        at = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
        made.append(Memory(f"mem_{i}", text, i < pinned, at))
    return made


def message(rng: random.Random) -> str:
    """One role-play message, 5-90 words, mostly Korean, some English."""
    words = []
    for _ in range(rng.randint(5, 90)):
        kind = rng.random()
        if kind < 0.45:
            words.append(rng.choice(KO_CHAT))
        elif kind < 0.7:
            words.append(zipf(rng, KO_NOUNS) + rng.choice(KO_PARTICLES))
        elif kind < 0.85:
            words.append(rng.choice(EN_CHAT))
        else:
            words.append(zipf(rng, EN_WORDS))
    return " ".join(words) + rng.choice([".", "?", "!"])


def queries(rng: random.Random, count: int, window: int = 6) -> list[str]:
    """Each turn's query: the last `window` messages of the conversation so far."""
    conversation = [message(rng) for _ in range(count + window)]
    return ["\n".join(conversation[i : i + window]) for i in range(count)]


def naive_scan(folded: list[tuple[Memory, str]], query: str) -> list[Memory]:
    """The baseline: for each memory, how many of the query's words it contains."""
    words = set(query.casefold().split())
    counts = [(sum(w in text for w in words), m) for m, text in folded]
    return [m for c, m in sorted(counts, key=lambda x: x[0], reverse=True) if c]


def timed(call: Callable[[int], object], samples: int) -> list[float]:
    """`samples` timings (s) of `call(i)` for i = 0, 1, ..."""
    taken = []
    for i in range(samples):
        started = time.perf_counter()
        call(i)
        taken.append(time.perf_counter() - started)
    return taken


def row(label: str, samples: list[float]) -> tuple[float, float]:
    p50, p99 = percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3
    print(f"{label:42} p50 {p50:7.3f}  p99 {p99:7.3f}")
    return p50, p99


def index_size(made: list[Memory]) -> float:
    """What a built index holds beyond the memories themselves (MiB, tracemalloc)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = MemoryIndex.build(made)
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del index
    return size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--pinned", type=int, default=5)
    parser.add_argument("--turns", type=int, default=5000, help="choose calls (a)")
    parser.add_argument("--builds", type=int, default=100, help="index builds (b)")
    parser.add_argument("--scans", type=int, default=300, help="baseline scans (c)")
    parser.add_argument("--budget", type=int, default=600, help="tokens for the memories")
    args = parser.parse_args()
    rng = random.Random(28)
    made = memories(args.memories, args.pinned, rng)
    turns = queries(rng, 500)
    index = MemoryIndex.build(made)
    cost = TokenEstimator().text
    folded = [(m, m.text.casefold()) for m in made if not m.pinned]

    def choose(i: int) -> None:
        index.choose(turns[i % len(turns)], args.budget, cost)

    timed(choose, 500)  # warm-up
    chosen = timed(choose, args.turns)

    # A new cost function (a new estimator, say): the index asks it for every memory once.
    def first_choose(i: int) -> None:
        index.choose(turns[i % len(turns)], args.budget, TokenEstimator(1.0).text)

    first = timed(first_choose, args.builds)
    built = timed(lambda i: MemoryIndex.build(made), args.builds)
    scanned = timed(lambda i: naive_scan(folded, turns[i % len(turns)]), args.scans)
    shared = sum(len(index.rank(q)) for q in turns) / len(turns)
    picked = sum(len(index.choose(q, args.budget, cost)) for q in turns) / len(turns)
    lengths = sorted(map(len, turns))

    print(
        f"memory ranking: {args.memories} memories ({args.pinned} pinned), queries of 6 "
        f"messages ({lengths[0]}-{lengths[-1]} characters, median {lengths[len(lengths) // 2]})"
        "; ms"
    )
    c50, c99 = row(f"(a) choose, built index, {args.turns} turns", chosen)
    row(f"    the first with a new cost function, {args.builds}", first)
    row(f"(b) build of the index, {args.builds} builds", built)
    s50, s99 = row(f"(c) naive substring scan, {args.scans} turns", scanned)
    print(f"{'ratio (a) / (c)':42} p50 {c50 / s50:7.3f}x p99 {c99 / s99:7.3f}x")
    print(
        f"per turn: {shared:.0f} memories share a query term, {picked:.1f} chosen within "
        f"{args.budget} tokens; index {index_size(made):.1f} MiB"
    )
    met = "met" if c99 <= TARGET_P99_MS else "NOT met"
    print(f"target (a) p99 <= {TARGET_P99_MS} ms: {met}")


if __name__ == "__main__":
    main()
