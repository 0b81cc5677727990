"""The pieces of context fitting on their own: token estimates, the summary cache and the
room a prompt needs."""

from avatar_chat.context.planner import (
    HEADROOM,
    Conversation,
    assemble,
    check_room,
    whole_sentences,
)
from avatar_chat.context.summaries import (
    KEPT_SUMMARIES,
    NO_SUMMARY,
    Summary,
    SummaryStore,
    best_match,
    prefix_digests,
    summaries_key,
)
from avatar_chat.context.tokens import TokenEstimator, default_tokens, learn_calibration
from avatar_chat.llm import make_llm_client, open_llm_http
from avatar_chat.llm.windows import ContextWindows
from avatar_chat.prompt.builder import CharacterCard, Limits, Scene, UserPersona, build_prompt
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_shared.errors import ValidationFailed
from avatar_shared.lorebook import Lorebook

from .helpers import emulated_llm

KOREAN = "안녕하세요, 오늘 도서관에서 만나서 반가워요!"
ENGLISH = "Hello, it is nice to meet you in the library today!"


def test_the_default_estimate_is_conservative_for_korean_and_english():
    hangul = len([c for c in KOREAN if "가" <= c <= "힣"])
    assert default_tokens(KOREAN) == hangul + -(-(len(KOREAN) - hangul) // 3)
    assert len(ENGLISH) / 4 < default_tokens(ENGLISH) < len(ENGLISH) / 2


def test_calibration_scales_the_default_and_miscounts_are_ignored():
    messages = [{"role": "user", "content": ENGLISH * 10}]
    default = default_tokens(ENGLISH * 10)
    calibration = learn_calibration(messages, counted=4 + default * 3 // 4)
    assert calibration is not None and abs(calibration - 0.75) < 0.01
    assert abs(TokenEstimator(calibration).text(ENGLISH * 10) - default * 0.75) <= 2
    assert learn_calibration(messages, counted=0) is None  # a server that reports none
    assert learn_calibration(messages, counted=4 + default // 10) is None  # a partial count


def test_learning_from_english_text_keeps_korean_estimates_script_aware():
    # A tokenizer at four English characters a token: the English rules teach 0.75.
    rules = {"role": "system", "content": ENGLISH * 20}
    calibration = learn_calibration([rules], counted=4 + len(rules["content"]) // 4)
    korean = KOREAN * 100
    assert TokenEstimator(calibration).text(korean) > len(korean) / 2


def conversation(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]


def test_a_summary_matches_only_the_exact_turns_it_covers():
    turns = conversation(10)
    digests = prefix_digests(turns)
    cached = {n: Summary(n, digests[n], f"s{n}", "t") for n in (4, 8)}
    assert best_match(cached, digests, limit=8).covered == 8
    edited = [*turns[:6], {"role": "assistant", "content": "changed"}, *turns[7:]]
    assert best_match(cached, prefix_digests(edited), limit=8).covered == 4
    assert best_match(cached, digests, limit=6).covered == 4  # the client went back
    assert best_match(cached, prefix_digests([{"role": "user", "content": "x"}]), 1) is NO_SUMMARY


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


def test_cuts_fall_before_a_users_turn_and_the_summary_goes_last():
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 40} for i in range(9)
    ]
    estimate = TokenEstimator()
    per_turn = estimate.messages(turns[:1])
    talk = Conversation("s", "system", turns, "m", max_tokens=1, window=9999, estimate=estimate)
    context = assemble(talk, NO_SUMMARY, 4 * per_turn, False)
    assert context.truncated and context.messages[1]["role"] == "user"
    assert context.messages[1:] == turns[-3:]  # four would not fit, and three start with a user

    summary = Summary(6, "d", "long summary " * 200, "t")
    squeezed = assemble(talk, summary, 2 * per_turn, False)
    assert squeezed.messages == [{"role": "system", "content": "system"}, turns[-1]]
    assert squeezed.truncated and squeezed.covered == 0


def test_a_prompt_that_passes_the_room_check_fits_the_window_less_the_reply():
    """Lore at a depth and post-history instructions are messages of their own: with their
    role markers and the headroom assemble keeps, a prompt check_room lets through is never
    larger than the window less max_tokens, however long the new message is."""
    entries = [
        {"keys": ["x"], "constant": True, "content": f"@@depth 1\nlore {i}"} for i in range(12)
    ]
    card = CharacterCard(
        "A guard of the north gate.",
        name="Guard",
        post_history_instructions="Stay brief.",
        lorebook=Lorebook.model_validate({"entries": entries}),
    )
    estimate, window, max_tokens = TokenEstimator(), 1000, 200
    limits = Limits(room=window, lore_budget=window, scan_depth=4)
    limit = int(window * (1 - HEADROOM)) - max_tokens  # as fit has it, before `reserved`
    passed = 0
    for words in range(0, 2000, 3):
        turns = [{"role": "user", "content": "word " * words}]
        prompt = build_prompt(card, UserPersona("User"), Scene(), turns, limits, estimate.text)
        talk = Conversation(
            "s", prompt.system, turns, "m", max_tokens, window, estimate, prompt.reserved
        )
        try:
            check_room(talk)
        except ValidationFailed:
            continue
        passed += 1
        sent = prompt.finish(assemble(talk, NO_SUMMARY, limit - talk.reserved, False).messages)
        assert estimate.messages(sent) <= limit
    assert passed  # the room check let some through


def test_a_summary_cut_short_by_max_tokens_keeps_its_whole_sentences():
    assert whole_sentences("민지는 책을 좋아한다. 다음 주에 도서관에서") == "민지는 책을 좋아한다."
    assert whole_sentences("Anna likes maps. She will come back!") == (
        "Anna likes maps. She will come back!"
    )


async def test_the_window_is_the_setting_when_the_server_cannot_say():
    settings = ChatSettings(ollama_base_url=f"http://127.0.0.1:{free_port()}")  # nobody there
    async with open_llm_http(settings) as http:
        windows = ContextWindows(make_llm_client(settings, http), 3000, retry_s=30)
        assert await windows.tokens("gemma-3-27b-it") == 3000


async def test_the_smaller_of_the_setting_and_the_trained_length_wins():
    with emulated_llm("ollama", context_length=2048) as backend:
        settings = ChatSettings(**backend.settings)
        async with open_llm_http(settings) as http:
            llm = make_llm_client(settings, http)
            assert await ContextWindows(llm, 8192, retry_s=30).tokens("gemma-3-27b-it") == 2048
            assert await ContextWindows(llm, 1024, retry_s=30).tokens("gemma-3-27b-it") == 1024
