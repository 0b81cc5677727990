"""The role-play prompt, in its documented order (docs/services.md, "The role-play prompt"):

1. one system message: the card's `system_prompt` with `{{original}}` as our role-play rules
   (ours alone when it has none); lore placed `before_char`; the character (name,
   description, personality); the scenario (the request's fields over the card's); lore
   placed `after_char`; the user's persona; what the character remembers of the user (its
   long-term memories most relevant to the last messages, pinned ones always, within
   MEMORY_BUDGET_RATIO of the window); the example dialogue, its blocks marked as
   examples (the first dropped first when room runs short); the planner adds the summary;
2. the conversation, with lore that asks for a depth inserted that many messages from the
   end, in its role;
3. `post_history_instructions` (`{{original}}`: our rules) as the last system message.

Examples stay inside the first system message, so they never break the alternation of user
and assistant turns that some chat templates insist on (Gemma's on vLLM). Lore placed at a
depth and post-history instructions are messages of their own, as the cards ask;
`alternation` reshapes them for templates that refuse that (LLM_ALTERNATE_ROLES).

Everything here counts toward the window: the planner fits the conversation around the parts
built here (`Prompt.reserved`).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from avatar_chat.context.tokens import MESSAGE_OVERHEAD_TOKENS
from avatar_chat.memory.recall import LineCost, Visible, query, section
from avatar_chat.memory.store import Remembered
from avatar_chat.prompt.examples import example_blocks
from avatar_shared.lorebook import Activation, Fired, Lorebook, activate
from avatar_shared.macros import Macros
from avatar_shared.sampling import GenerationDefaults

Message = dict[str, str]

ROLEPLAY_RULES = """\
You are role-playing the character described below. Stay in character at all times:
- Speak as the character, in the first person, with the character's personality, knowledge
  and speech style exactly as the description gives them (formal or casual speech, verbal
  habits, tone).
- Reply in the language the user writes in.
- Never say or imply that you are an AI, a language model or an assistant, and never step
  out of the role to comment on it, even when asked to.
- Keep replies conversational: say what the character would say in this moment."""


UNCALIBRATED = LineCost(1.0)  # what memories cost in a session that has learned nothing yet


@dataclass(frozen=True)
class CharacterCard:
    """What a prompt takes of a character (a stored one, or the request's `persona`)."""

    description: str
    name: str = ""
    nickname: str = ""
    personality: str = ""
    scenario: str = ""
    examples: str = ""  # the card's mes_example, our sample_dialogue
    system_prompt: str = ""
    post_history_instructions: str = ""
    lorebook: Lorebook | None = None
    generation: GenerationDefaults | None = None  # used where a request leaves a control out


@dataclass(frozen=True)
class UserPersona:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Scene:
    """The request's scenario: `opponent` is the character as the user's screen names it."""

    opponent: str = ""
    situation: str = ""
    background: str = ""


@dataclass(frozen=True)
class Limits:
    room: int  # tokens the system message may take before the prompt is due for summarizing
    lore_budget: int  # tokens for lore, unless the book sets its own
    scan_depth: int  # messages scanned for lore keys, unless the book sets its own
    memory_budget: int = 0  # tokens for memories besides the pinned ones
    memory_query: int = 6  # the last messages memories are ranked against
    lore_seed: int | None = None  # rolls lore's probabilities and groups, with the turn


@dataclass(frozen=True)
class Prompt:
    system: str  # the first system message, before the planner adds a summary
    depth_lore: list[Fired]  # inserted into the conversation once it is fitted
    after: list[Message]  # the last messages (post-history instructions)
    tokens: dict[str, int]  # per part, for the receipt
    lore: Activation
    examples_dropped: int  # example blocks left out for room
    macros: Macros
    reserved: int = field(default=0)  # tokens of the parts outside the system message
    memories: list[Remembered] = field(default_factory=list)  # those the prompt holds

    def finish(self, fitted: list[Message]) -> list[Message]:
        """The fitted messages (system first) with depth lore and the last messages added."""
        messages = list(fitted)
        for item in sorted(self.depth_lore, key=lambda f: -f.depth):
            at = max(1, len(messages) - item.depth)
            messages.insert(at, {"role": item.role, "content": self.macros.expand(item.text)})
        return messages + self.after


def build_prompt(
    card: CharacterCard,
    user: UserPersona,
    scene: Scene,
    turns: list[Message],
    limits: Limits,
    tokens: Callable[[str], int],
    memories: Visible | None = None,
    memory_cost: LineCost = UNCALIBRATED,
) -> Prompt:
    """`memories`: the conversation's, chosen by their relevance to the last turns, each
    costing `memory_cost` (the session's calibration of `tokens`)."""
    macros = Macros(
        char=card.nickname or card.name or scene.opponent or "Character", user=user.name
    )
    lore = _with_text(
        activate(
            card.lorebook or Lorebook(),
            [t["content"] for t in turns],
            limits.scan_depth,
            limits.lore_budget,
            lambda text: tokens(macros.expand(text)),  # counted as the model will see it
            macros.expand,  # a key `{{char}}` fires on the character's name
            _lore_rng(limits.lore_seed, turns),
        )
    )
    placed = {p: _lore_text(lore, p, macros) for p in ("before_char", "after_char")}
    remembered = (
        memories.choose(query(turns, limits.memory_query), limits.memory_budget, memory_cost)
        if memories is not None
        else []
    )
    parts = {
        "system": macros.with_original(ROLEPLAY_RULES).expand(card.system_prompt.strip())
        or ROLEPLAY_RULES,
        "lore_before": placed["before_char"],
        "character": _character(card, macros),
        "scenario": _scenario(card, scene, macros),
        "lore_after": placed["after_char"],
        "persona": _persona(user, macros),
        "memories": section(remembered, macros.char, macros.user),
    }
    after = _after(card, macros)
    depth_lore = [f for f in lore.fired if f.place == "depth"]
    # Messages of their own: each with its role markers, as the planner counts the turns.
    reserved = sum(tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in after) + sum(
        f.tokens + MESSAGE_OVERHEAD_TOKENS for f in depth_lore
    )
    used = sum(tokens(p) for p in parts.values() if p) + reserved
    names = (macros.char, card.name)  # a line may open with either
    examples, dropped = _examples(card.examples, names, macros, limits.room - used, tokens)
    system = "\n\n".join(p for p in [*parts.values(), examples] if p)
    counted = {
        "system": tokens(parts["system"]),
        "character": tokens(parts["character"]) + _count(parts["scenario"], tokens),
        "persona": _count(parts["persona"], tokens),
        "lore": sum(f.tokens for f in lore.fired),
        "examples": _count(examples, tokens),
        "memories": _count(parts["memories"], tokens),
        "post_history": sum(tokens(m["content"]) for m in after),
    }
    return Prompt(system, depth_lore, after, counted, lore, dropped, macros, reserved, remembered)


def _lore_rng(seed: int | None, turns: list[Message]) -> random.Random:
    """What rolls lore's probabilities and groups: SillyTavern rolls on every turn, so a
    fixed seed (the request's or the card's) is mixed with the turn: the number of user
    messages so far and the last one's text (a client sending only its last few messages
    keeps their number; its new message still changes the roll). A regenerate, a swipe or a
    continue of a turn (the same user messages) replays its lore; the next turn rolls
    afresh. No seed: seeded afresh."""
    if seed is None:
        return random.Random()
    said = [message["content"] for message in turns if message["role"] == "user"]
    last = said[-1] if said else ""
    # A str seeds through SHA-512: the same in every process.
    return random.Random(f"{seed}:{len(said)}:{last}")


def _count(text: str, tokens: Callable[[str], int]) -> int:
    return tokens(text) if text else 0


def _character(card: CharacterCard, macros: Macros) -> str:
    text = f"# Character: {macros.char}\n{macros.expand(card.description.strip())}"
    if card.personality.strip():
        text += f"\n\n# Personality\n{macros.expand(card.personality.strip())}"
    return text


def _scenario(card: CharacterCard, scene: Scene, macros: Macros) -> str:
    situation = scene.situation.strip() or card.scenario.strip()
    lines = [
        f"- {label}: {macros.expand(value)}"
        for label, value in (
            ("Your name on the user's screen", scene.opponent.strip()),
            ("Situation", situation),
            ("Background", scene.background.strip()),
        )
        if value
    ]
    return "# Scenario\n" + "\n".join(lines) if lines else ""


def _persona(user: UserPersona, macros: Macros) -> str:
    if not user.description.strip():
        return ""
    return f"# The user: {user.name}\n{macros.expand(user.description.strip())}"


def _with_text(lore: Activation) -> Activation:
    """The activation less the entries that fired with nothing to say (only decorators): at a
    depth one would be an empty message (last, an empty assistant's turn the model continues
    as its reply), and the receipt would list what the model never saw."""
    return replace(lore, fired=[f for f in lore.fired if f.text.strip()])


def _lore_text(lore: Activation, place: str, macros: Macros) -> str:
    texts = [macros.expand(f.text) for f in lore.fired if f.place == place]
    return "# Lore\n" + "\n\n".join(texts) if texts else ""


def _examples(
    text: str, names: tuple[str, ...], macros: Macros, room: int, tokens: Callable[[str], int]
) -> tuple[str, int]:
    """The example dialogue that fits `room`, from its last block back; and how many blocks
    were left out."""
    blocks = [
        "<START>\n"
        + "\n".join(
            f"{macros.user if turn.role == 'user' else macros.char}: {macros.expand(turn.content)}"
            for turn in block
        )
        for block in example_blocks(text, names, macros.user)
    ]
    heading = (
        f"# Example dialogue\nHow {macros.char} speaks, in earlier scenes: examples only, "
        "not part of this conversation."
    )
    kept: list[str] = []
    room -= tokens(heading)
    for block in reversed(blocks):
        cost = tokens(block)
        if cost > room:
            break
        kept.insert(0, block)
        room -= cost
    if not kept:
        return "", len(blocks)
    return heading + "\n" + "\n".join(kept), len(blocks) - len(kept)


def _after(card: CharacterCard, macros: Macros) -> list[Message]:
    """The card's post-history instructions; their `{{original}}` is our role-play rules too,
    as API.md has it."""
    text = macros.with_original(ROLEPLAY_RULES).expand(card.post_history_instructions).strip()
    return [{"role": "system", "content": text}] if text else []
