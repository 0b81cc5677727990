"""Which terms bring the right memory back (issue 28): Hangul syllable bigrams, as
`avatar_chat.memory.ranking` indexes them, against the morphemes of kiwipiepy, a Korean
morphological analyzer, on a small hand-labelled set: 30 memories of a user in Korean and 63
chat lines, each of which should bring one of them back (particles and endings varied).
Also the time each takes to cut a turn's query (800 and 2,000 characters).

    uv run python bench/memory_terms.py     (bigrams only: kiwipiepy is no dependency)
    python -m venv /tmp/kiwi && /tmp/kiwi/bin/pip install kiwipiepy && \
        PYTHONPATH=services/chat/src /tmp/kiwi/bin/python bench/memory_terms.py
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from avatar_chat.memory import ranking

Terms = Callable[[str], list[str]]


@dataclass
class M:
    id: str
    text: str
    pinned: bool = False
    at: str = "2026-01-01T00:00:00Z"


MEMS = {
    "name": "사용자의 이름은 민수다",
    "bread": "사용자는 내일 빵을 가져오기로 약속했다",
    "jazz": "사용자는 재즈 음악을 좋아한다",
    "cat": "사용자는 나비라는 고양이를 키운다",
    "sister": "사용자의 여동생은 대학교에 다닌다",
    "busan": "사용자는 부산에서 태어났다",
    "coffee": "사용자는 아침마다 커피를 두 잔 마신다",
    "exam": "사용자는 다음 주에 운전면허 시험을 본다",
    "allergy": "사용자는 땅콩 알레르기가 있다",
    "piano": "사용자는 어릴 때 피아노를 배웠다",
    "job": "사용자는 게임 회사에서 개발자로 일한다",
    "rain": "사용자는 비 오는 날을 싫어한다",
    "birthday": "사용자의 생일은 3월 14일이다",
    "hiking": "사용자는 주말마다 친구들과 등산을 간다",
    "ramen": "사용자가 가장 좋아하는 음식은 라면이다",
    "dog": "사용자는 어릴 때 키우던 강아지를 그리워한다",
    "move": "사용자는 다음 달에 서울로 이사한다",
    "guitar": "사용자는 요즘 기타를 배우고 있다",
    "cold": "사용자는 지난주에 감기에 걸렸다",
    "novel": "사용자는 판타지 소설을 쓰고 있다",
    "sea": "사용자는 바다를 보러 제주도에 가고 싶어한다",
    "mother": "사용자의 어머니는 꽃집을 운영하신다",
    "insomnia": "사용자는 요즘 잠을 잘 못 잔다",
    "swim": "사용자는 수영을 못한다",
    "movie": "사용자가 제일 좋아하는 영화는 인터스텔라다",
    "diet": "사용자는 다이어트 중이라 저녁을 거른다",
    "friend": "사용자의 가장 친한 친구는 지은이다",
    "interview": "사용자는 금요일에 면접이 있다",
    "drawing": "사용자는 그림 그리는 것을 좋아한다",
    "car": "사용자는 빨간 자동차를 샀다",
}
QUERIES = [
    ("name", "민수야 안녕! 오늘 뭐 했어?"),
    ("name", "민수는 어디 있어?"),
    ("name", "너 이름이 뭐였지?"),
    ("bread", "빵 가져왔어?"),
    ("bread", "약속한 거 기억나? 내일 말이야"),
    ("bread", "빵은 어디서 샀어?"),
    ("jazz", "요즘 재즈 많이 들어?"),
    ("jazz", "어떤 음악 좋아해?"),
    ("cat", "고양이는 잘 지내?"),
    ("cat", "나비가 보고 싶다"),
    ("cat", "고양이가 아프대"),
    ("sister", "여동생이 몇 학년이야?"),
    ("sister", "동생은 대학 생활 어때?"),
    ("busan", "부산 사투리 써봐"),
    ("busan", "고향이 어디라고 했지? 부산이었나"),
    ("coffee", "커피 한잔 할래?"),
    ("coffee", "오늘 아침에 커피 몇 잔 마셨어?"),
    ("exam", "운전면허 시험 준비는 잘 돼가?"),
    ("exam", "시험 언제라고 했지?"),
    ("allergy", "땅콩 들어간 과자 먹어도 돼?"),
    ("allergy", "알레르기 있는 음식 있어?"),
    ("piano", "피아노 칠 줄 알아?"),
    ("piano", "어렸을 때 뭐 배웠어?"),
    ("job", "회사 일은 어때? 개발 힘들지?"),
    ("job", "게임 만드는 일 재밌어?"),
    ("rain", "오늘 비가 온대"),
    ("rain", "비 오니까 기분이 어때?"),
    ("birthday", "생일 선물 뭐 갖고 싶어?"),
    ("birthday", "3월 14일에 뭐 해?"),
    ("hiking", "이번 주말에도 산에 가?"),
    ("hiking", "등산 갔다 왔어?"),
    ("ramen", "라면 끓여줄까?"),
    ("ramen", "제일 좋아하는 음식이 뭐야?"),
    ("dog", "강아지 키워본 적 있어?"),
    ("dog", "예전 강아지 생각나?"),
    ("move", "이사 준비는 다 했어?"),
    ("move", "서울로 가면 어디 살아?"),
    ("guitar", "기타 연습은 잘 돼?"),
    ("guitar", "기타로 무슨 곡 쳐?"),
    ("cold", "감기는 다 나았어?"),
    ("cold", "아직도 감기 기운 있어?"),
    ("novel", "소설은 어디까지 썼어?"),
    ("novel", "판타지 이야기 들려줘"),
    ("sea", "제주도 가면 바다 보자"),
    ("sea", "바다 좋아해?"),
    ("mother", "어머니 꽃집은 잘 돼?"),
    ("mother", "엄마한테 꽃 사드릴까?"),
    ("insomnia", "어젯밤에 잠은 잘 잤어?"),
    ("insomnia", "잠이 안 와서 힘들지?"),
    ("swim", "수영하러 갈래?"),
    ("swim", "수영 배워볼래?"),
    ("movie", "인터스텔라 또 볼까?"),
    ("movie", "영화 보러 가자. 좋아하는 영화 있어?"),
    ("diet", "다이어트는 잘 돼가?"),
    ("diet", "저녁 먹었어?"),
    ("friend", "지은이랑 요즘도 자주 만나?"),
    ("friend", "지은이는 잘 지내?"),
    ("interview", "면접 준비 다 했어?"),
    ("interview", "금요일 면접 떨려?"),
    ("drawing", "그림 그린 거 보여줘"),
    ("drawing", "요즘도 그림 그려?"),
    ("car", "새 자동차 타고 드라이브 가자"),
    ("car", "빨간 차 멋지더라"),
]


def evaluate(cut: Terms, label: str) -> None:
    """Mean reciprocal rank of the wanted memory, and how often it comes first, in the top 3."""
    bigrams, ranking.terms = ranking.terms, cut  # the index calls the module's `terms`
    try:
        index = ranking.MemoryIndex.build([M(k, v) for k, v in MEMS.items()])
        ranks = [[m.id for m, _ in index.rank(q)] for _, q in QUERIES]
    finally:
        ranking.terms = bigrams
    found = [
        ids.index(want) + 1 if want in ids else 0
        for (want, _), ids in zip(QUERIES, ranks, strict=True)
    ]
    mrr = sum(1 / r for r in found if r) / len(found)
    first = sum(r == 1 for r in found) / len(found)
    top3 = sum(0 < r <= 3 for r in found) / len(found)
    print(f"{label:30} MRR {mrr:.3f}  first {first:.3f}  top 3 {top3:.3f}")


def speed(cut: Terms, label: str) -> None:
    line = (
        "오늘은 정말 긴 하루였어. 민수랑 카페에서 커피 마시고 재즈 공연 보러 갔어! It was great. "
    )
    for size in (800, 2000):
        query = (line * 40)[:size]
        cut(query)
        started = time.perf_counter()
        for _ in range(50):
            cut(query)
        print(f"{label:30} {size} characters: {(time.perf_counter() - started) / 50 * 1e3:.3f} ms")


def kiwi_terms() -> Terms | None:
    try:
        from kiwipiepy import Kiwi  # type: ignore[import-not-found]
    except ImportError:
        return None
    kiwi = Kiwi()
    content = ("NN", "VV", "VA", "XR", "SL", "SN", "SH", "MAG")  # nouns, stems, roots, Latin

    def cut(text: str) -> list[str]:
        return [t.form.casefold() for t in kiwi.tokenize(text) if t.tag.startswith(content)]

    return cut


def main() -> None:
    evaluate(ranking.terms, "syllable bigrams")
    kiwi = kiwi_terms()
    if kiwi:
        evaluate(kiwi, "kiwipiepy content morphemes")
    else:
        print("kiwipiepy not installed: bigrams only (see the docstring)")
    speed(ranking.terms, "syllable bigrams")
    if kiwi:
        speed(kiwi, "kiwipiepy")


if __name__ == "__main__":
    main()
