"""The role-play prompt builder, part by part and in order (a pure function: no stack)."""

from avatar_chat.context.tokens import MESSAGE_OVERHEAD_TOKENS
from avatar_chat.prompt.builder import (
    ROLEPLAY_RULES,
    CharacterCard,
    Limits,
    Scene,
    UserPersona,
    build_prompt,
)
from avatar_chat.prompt.examples import example_blocks
from avatar_chat.schemas import PromptTokens
from avatar_shared.lorebook import Lorebook
from avatar_shared.macros import Macros

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."
ROOMY = Limits(room=100_000, lore_budget=10_000, scan_depth=4)
USER = UserPersona("민지")


def words(text: str) -> int:
    return len(text.split())


def said(*texts: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)][-len(texts) :]


def build(card: CharacterCard, *texts: str, scene: Scene | None = None, limits: Limits = ROOMY):
    return build_prompt(card, USER, scene or Scene(), said(*texts), limits, words)


def test_a_persona_alone_gets_our_rules_and_the_character():
    prompt = build(CharacterCard(PERSONA), "안녕")
    assert prompt.system.startswith(ROLEPLAY_RULES)
    assert f"# Character: Character\n{PERSONA}" in prompt.system
    assert (
        "Stay in character" in prompt.system
        and "Never say or imply that you are an AI" in prompt.system
    )
    assert "# Scenario" not in prompt.system and prompt.after == []


def test_the_cards_system_prompt_wraps_our_rules_through_original():
    card = CharacterCard(PERSONA, name="Seraphina", system_prompt="Be kind.\n{{ORIGINAL}}\nEnd.")
    prompt = build(card, "hi")
    assert prompt.system.startswith(f"Be kind.\n{ROLEPLAY_RULES}\nEnd.")
    alone = build(CharacterCard(PERSONA, system_prompt="Only {{char}}'s rules."), "hi")
    assert alone.system.startswith("Only Character's rules.") and ROLEPLAY_RULES not in alone.system


def test_the_parts_come_in_the_documented_order():
    book = Lorebook.model_validate(
        {
            "entries": [
                {"keys": ["forest"], "content": "BEFORE lore", "position": "before_char"},
                {"keys": ["forest"], "content": "AFTER lore", "position": "after_char"},
            ]
        }
    )
    card = CharacterCard(
        "DESCRIPTION of {{char}}",
        name="Seraphina",
        personality="PERSONALITY",
        scenario="CARD SCENARIO with <USER>",
        examples="<START>\n{{user}}: EXAMPLE question\n{{char}}: EXAMPLE answer",
        lorebook=book,
    )
    user = UserPersona("민지", "PERSONA of {{user}}")
    prompt = build_prompt(card, user, Scene(), said("the forest?"), ROOMY, words)
    order = [
        ROLEPLAY_RULES[:20], "BEFORE lore", "# Character: Seraphina", "DESCRIPTION of Seraphina",
        "PERSONALITY", "CARD SCENARIO with 민지", "AFTER lore", "# The user: 민지",
        "PERSONA of 민지", "<START>\n민지: EXAMPLE question\nSeraphina: EXAMPLE answer",
    ]  # fmt: skip
    places = [prompt.system.index(part) for part in order]
    assert places == sorted(places)


def test_opponent_names_the_character_not_the_user_and_request_scenario_wins():
    card = CharacterCard(PERSONA, scenario="The card's own scene")
    scene = Scene(opponent="헤르미온느 그레인저", situation="호그와트 도서관에서 만남")
    prompt = build(card, "안녕", scene=scene)
    assert "# Character: 헤르미온느 그레인저" in prompt.system  # {{char}} from opponent
    assert "- Your name on the user's screen: 헤르미온느 그레인저" in prompt.system
    assert "talking with" not in prompt.system
    assert "- Situation: 호그와트 도서관에서 만남" in prompt.system
    assert "The card's own scene" not in prompt.system
    named = build(CharacterCard(PERSONA, name="Hermione", nickname="Mione"), "hi", scene=scene)
    assert "# Character: Mione" in named.system  # the V3 nickname first


def test_macros_are_case_insensitive_with_their_old_forms():
    macros = Macros(char="Seraphina", user="민지", original="RULES")
    text = "{{Char}} meets {{USER}}; <BOT> and <user>; {{original}}; {{other}}"
    assert macros.expand(text) == "Seraphina meets 민지; Seraphina and 민지; RULES; {{other}}"


def test_example_dialogue_splits_into_blocks_of_turns():
    text = "intro line\n<START>\n{{user}}: hi\n{{char}}: hello\nsecond line\n<start>\n<BOT>: alone"
    blocks = example_blocks(text)
    assert [[(t.role, t.content) for t in block] for block in blocks] == [
        [("assistant", "intro line")],
        [("user", "hi"), ("assistant", "hello\nsecond line")],
        [("assistant", "alone")],
    ]


def test_examples_go_first_block_first_when_room_runs_short():
    examples = "<START>\n{{char}}: " + "old " * 50 + "\n<START>\n{{char}}: new scene"
    card = CharacterCard(PERSONA, examples=examples)
    roomy = build(card, "hi")
    assert "old old" in roomy.system and "new scene" in roomy.system
    room = words(roomy.system) - 40  # not enough for the long first block
    short = build(card, "hi", limits=Limits(room, 10_000, 4))
    assert "old old" not in short.system and "new scene" in short.system
    assert short.examples_dropped == 1 and short.tokens["examples"] < roomy.tokens["examples"]
    none = build(card, "hi", limits=Limits(10, 10_000, 4))
    assert "# Example dialogue" not in none.system and none.examples_dropped == 2


def test_post_history_instructions_come_last_and_depth_lore_sits_at_its_depth():
    book = Lorebook.model_validate(
        {"entries": [{"keys": ["sword"], "content": "@@depth 2\n@@role user\nSWORD lore"}]}
    )
    card = CharacterCard(
        PERSONA, post_history_instructions="Stay brief, {{user}}. {{original}}", lorebook=book
    )
    prompt = build(card, "a sword?", "yes", "more")
    fitted = [{"role": "system", "content": prompt.system}, *said("a sword?", "yes", "more")]
    messages = prompt.finish(fitted)
    assert messages[-1] == {"role": "system", "content": f"Stay brief, 민지. {ROLEPLAY_RULES}"}
    # Depth 2: before the last two messages of the conversation.
    assert messages[-4] == {"role": "user", "content": "SWORD lore"}
    assert "SWORD" not in prompt.system
    # Each a message of its own, with its role markers.
    overhead = 2 * MESSAGE_OVERHEAD_TOKENS
    assert prompt.reserved == words(messages[-1]["content"]) + words("SWORD lore") + overhead


def test_lore_counts_and_the_receipt_parts_add_up():
    book = Lorebook.model_validate(
        {
            "entries": [
                {"keys": ["숲"], "content": "숲의 전설", "name": "forest"},
                {"keys": ["성"], "content": "성의 전설", "enabled": False},
            ]
        }
    )
    prompt = build(CharacterCard(PERSONA, lorebook=book), "숲에서 성을 봤어")
    assert [(f.entry.label, f.key) for f in prompt.lore.fired] == [("forest", "숲")]
    assert [s.reason for s in prompt.lore.skipped] == ["disabled"]
    assert prompt.tokens["lore"] == words("숲의 전설")
    assert sum(prompt.tokens.values()) <= words(prompt.system)


def test_lore_keys_with_macros_fire_on_the_names_of_this_prompt():
    book = Lorebook.model_validate(
        {
            "entries": [
                {"keys": ["{{user}}"], "content": "{{user}} is the heir of the north."},
                {"keys": ["{{CHAR}}"], "content": "{{char}} guards the gate."},
                {"keys": ["gate"], "selective": True, "secondary_keys": ["<USER>"],
                 "content": "The gate knows {{user}}."},
            ]
        }
    )  # fmt: skip
    card = CharacterCard(PERSONA, name="Seraphina", lorebook=book)
    prompt = build(card, "Seraphina, open the gate for 민지?")
    assert [f.text for f in prompt.lore.fired] == [e.content for e in book.entries]
    jisoo = UserPersona("Jisoo")
    other = build_prompt(card, jisoo, Scene(), said("민지 at the gate"), ROOMY, words)
    assert other.lore.fired == []  # the names of this prompt, not of an earlier one


def test_lores_probabilities_and_groups_are_rolled_with_the_limits_seed():
    group = {"group": "weather", "selectiveLogic": 0}
    book = Lorebook.model_validate(
        {
            "entries": [
                {"keys": ["sky"], "content": f"The sky is {sky}.", "extensions": group}
                for sky in ("grey", "blue", "red", "green")
            ]
        }
    )
    card = CharacterCard(PERSONA, lorebook=book)

    def sky(seed: int) -> list[str]:
        limits = Limits(room=100_000, lore_budget=10_000, scan_depth=4, lore_seed=seed)
        return [f.text for f in build(card, "the sky", limits=limits).lore.fired]

    skies = [sky(seed) for seed in range(12)]
    assert all(len(fired) == 1 for fired in skies)  # one of the group
    assert skies == [sky(seed) for seed in range(12)]  # a seed replays its turn's lore
    assert len({fired[0] for fired in skies}) > 1


def test_with_a_fixed_seed_each_turn_rolls_its_lore_afresh_and_a_replay_rolls_the_same():
    """SillyTavern rolls an entry's probability on every turn: with the request's seed fixed,
    a 50% entry fires on some turns and not on others, and a turn played again (a
    regenerate, a swipe, a continue: the same user messages) fires what it fired."""
    chance = {"useProbability": True, "probability": 50, "selectiveLogic": 0}
    book = Lorebook.model_validate(
        {"entries": [{"keys": ["phone"], "content": "It rings.", "extensions": chance}]}
    )
    card = CharacterCard(PERSONA, lorebook=book)
    limits = Limits(room=100_000, lore_budget=10_000, scan_depth=4, lore_seed=7)

    def rings(*texts: str) -> bool:
        return [f.text for f in build(card, *texts, limits=limits).lore.fired] == ["It rings."]

    talk = [text for turn in range(20) for text in (f"the phone, {turn}", "a reply")]
    turns = [talk[: 2 * turn + 1] for turn in range(20)]  # each ends with its user message
    fired = [rings(*said) for said in turns]
    assert 0 < fired.count(True) < 20
    assert fired == [rings(*said) for said in turns]  # the same turns, the same lore
    # Continued: its reply ends the conversation; it is still that turn.
    assert [rings(*said, "a reply") for said in turns] == fired
    # A client sending only its last few messages: their number stays, its new one changes.
    window = [said[-5:] for said in turns[3:]]
    assert 0 < [rings(*said) for said in window].count(True) < len(window)


def test_the_receipt_counts_the_post_history_instructions_and_adds_up_to_what_is_sent():
    book = Lorebook.model_validate(
        {"entries": [{"keys": ["sword"], "content": "@@depth 1\nSWORD lore of {{char}}"}]}
    )
    card = CharacterCard(
        PERSONA, post_history_instructions="Stay brief, {{user}}. {{original}}", lorebook=book
    )
    turns = said("a sword?")
    prompt = build_prompt(card, USER, Scene(), turns, ROOMY, words)
    messages = prompt.finish([{"role": "system", "content": prompt.system}, *turns])
    assert prompt.tokens["post_history"] == words(f"Stay brief, 민지. {ROLEPLAY_RULES}")
    around_turns = [m for m in messages if m not in turns]
    assert sum(prompt.tokens.values()) == sum(words(m["content"]) for m in around_turns)
    receipt = PromptTokens(**prompt.tokens, summary=0, history=0, reserved=0)
    assert receipt.post_history == prompt.tokens["post_history"]  # the reply carries it
    assert build(CharacterCard(PERSONA), "hi").tokens["post_history"] == 0


def test_lore_entries_that_are_only_decorators_are_left_out():
    book = Lorebook.model_validate(
        {
            "entries": [
                {"keys": ["x"], "constant": True, "content": "@@depth 0\n@@role assistant\n"},
                {"keys": ["x"], "constant": True, "content": "@@position before_char\n  "},
                {"keys": ["x"], "constant": True, "content": "", "position": "after_char"},
                {"keys": ["x"], "constant": True, "content": "@@depth 2\nKEPT lore"},
            ]
        }
    )
    turns = said("hello")
    prompt = build_prompt(CharacterCard(PERSONA, lorebook=book), USER, Scene(), turns, ROOMY, words)
    messages = prompt.finish([{"role": "system", "content": prompt.system}, *turns])
    assert all(m["content"].strip() for m in messages)
    assert messages[-1] == turns[-1] and "# Lore" not in prompt.system
    used, _ = prompt.lore.report()
    assert [u.index for u in used] == [3]
    assert (
        prompt.tokens["lore"] == words("KEPT lore")
        and prompt.reserved == words("KEPT lore") + MESSAGE_OVERHEAD_TOKENS
    )


def test_example_lines_may_name_their_speakers_and_start_anywhere_as_in_sillytavern():
    text = (
        "<START>\nSeraphina: Welcome, traveller.\n민지: Where am I?\nSeraphina: In my glade."
        "\n<START>{{user}}: hi\nSera: hello <start> Seraphina: alone\nseraphina: not a name"
    )
    blocks = example_blocks(text, ("Seraphina", "Sera"), "민지")
    assert [[(t.role, t.content) for t in block] for block in blocks] == [
        [
            ("assistant", "Welcome, traveller."),
            ("user", "Where am I?"),
            ("assistant", "In my glade."),
        ],
        [("user", "hi"), ("assistant", "hello")],
        [("assistant", "alone\nseraphina: not a name")],  # names as written, as there
    ]
    card = CharacterCard(PERSONA, name="Seraphina", nickname="Sera", examples=text)
    system = build(card, "hi").system
    assert "Seraphina: Seraphina:" not in system and "<START>{{user}}" not in system
    assert "<START>\n민지: hi\nSera: hello\n<START>" in system
