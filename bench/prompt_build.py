"""Building the role-play prompt (issue 24): a card with a 200-entry lorebook, example
dialogue, system prompt and post-history instructions over a 200-message history, against the
persona-only prompt over the same history, in the same run. In-process: no stack, no LLM.

Each sample is one request's work before the planner fits the window: lore activation over
the recent messages, the system message, the examples fitted, depth lore and the last message
added (`build_prompt` then `Prompt.finish`), with the chat service's own token estimate.

    make bench            (or: uv run python bench/prompt_build.py --requests 5000)

Target: p99 <= 1 ms for the whole card.
"""

import argparse
import time

from loadgen import percentile

from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.prompt.builder import CharacterCard, Limits, Scene, UserPersona, build_prompt
from avatar_shared.lorebook import Lorebook

TARGET_P99_MS = 1.0
PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
PLACES = ["도서관", "숲", "호수", "성", "시장", "탑", "다리", "동굴", "항구", "정원"]


def lorebook(entries: int) -> Lorebook:
    """Entries of every kind the activation handles: Korean and Latin keys, selective ones,
    constant ones, a regex key, and some placed at a depth."""
    made = []
    for i in range(entries):
        entry: dict = {
            "keys": [f"{PLACES[i % len(PLACES)]}{i}", f"place{i}"],
            "content": f"{PLACES[i % len(PLACES)]} {i}의 전설: " + "오래된 이야기. " * 8,
            "insertion_order": i,
            "priority": i % 7,
        }
        if i % 10 == 1:
            entry |= {"selective": True, "secondary_keys": [f"밤{i}"]}
        if i % 50 == 2:
            entry["constant"] = True
        if i % 40 == 3:
            entry["keys"] = [f"/place{i}s?/i"]
        if i % 25 == 4:
            entry["content"] = "@@depth 2\n" + entry["content"]
        made.append(entry)
    return Lorebook.model_validate({"entries": made, "recursive_scanning": True})


def history(messages: int) -> list[dict[str, str]]:
    turns = []
    for i in range(messages):
        mentions = f" {PLACES[i % len(PLACES)]}{i % 200}에서 place{(i * 7) % 200}를 봤어."
        text = "오늘은 정말 긴 하루였어. " * 3 + mentions
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    if turns[-1]["role"] != "user":
        turns.append({"role": "user", "content": "그래서 어떻게 됐어?"})
    return turns


def sample(card: CharacterCard, turns: list[dict[str, str]], requests: int) -> list[float]:
    estimate, user = TokenEstimator(), UserPersona("민지", "호기심 많은 여행자. {{char}}의 친구.")
    limits = Limits(room=8192 * 8 // 10 - 512 - 3000, lore_budget=2048, scan_depth=4)
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        prompt = build_prompt(card, user, Scene(), turns, limits, estimate.text)
        prompt.finish([{"role": "system", "content": prompt.system}, *turns])
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    turns = history(200)
    whole = CharacterCard(
        PERSONA,
        name="헤르미온느",
        personality="똑똑하고 성실함. " * 5,
        scenario="{{user}}와 {{char}}가 도서관에서 만난다.",
        examples="\n".join(
            f"<START>\n{{{{user}}}}: 질문 {i}?\n{{{{char}}}}: 대답 {i}." for i in range(10)
        ),
        system_prompt="{{original}}\n마법 세계의 이야기.",
        post_history_instructions="{{char}}답게 짧게 답해.",
        lorebook=lorebook(200),
    )
    persona_only = CharacterCard(PERSONA)
    sample(whole, turns, 200)  # warm-up: the regex cache, the code paths
    base = sample(persona_only, turns, args.requests)
    measured = sample(whole, turns, args.requests)
    b50, b99 = percentile(base, 50) * 1e3, percentile(base, 99) * 1e3
    m50, m99 = percentile(measured, 50) * 1e3, percentile(measured, 99) * 1e3
    print(f"prompt building, 200-message history, {args.requests} requests each; ms")
    print(f"persona-only prompt          p50 {b50:6.3f}  p99 {b99:6.3f}")
    print(f"whole card, 200-entry book   p50 {m50:6.3f}  p99 {m99:6.3f}")
    print(f"ratio                        p50 {m50 / b50:6.1f}x p99 {m99 / b99:6.1f}x")
    met = "met" if m99 <= TARGET_P99_MS else "NOT met"
    print(f"target p99 <= {TARGET_P99_MS} ms: {met}")


if __name__ == "__main__":
    main()
