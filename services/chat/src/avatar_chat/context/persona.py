"""Builds the one system message of a role-play conversation (a pure function)."""

from avatar_chat.schemas import Scenario

ROLEPLAY_RULES = """\
You are role-playing the character described above. Stay in character at all times:
- Speak as the character, in the first person, with the character's personality, knowledge
  and speech style exactly as the persona describes them (formal or casual speech, verbal
  habits, tone).
- Reply in the language the user writes in.
- Never say or imply that you are an AI, a language model or an assistant, and never step
  out of the role to comment on it, even when asked to.
- Keep replies conversational: say what the character would say in this moment."""


def build_system_prompt(persona: str, scenario: Scenario | None = None) -> str:
    sections = [f"# Character\n{persona.strip()}"]
    if scenario is not None:
        lines = [
            f"- {label}: {value.strip()}"
            for label, value in (
                ("The person you are talking with", scenario.opponent),
                ("Situation", scenario.situation),
                ("Background", scenario.background),
            )
            if value and value.strip()
        ]
        if lines:
            sections.append("# Scenario\n" + "\n".join(lines))
    sections.append(f"# Rules\n{ROLEPLAY_RULES}")
    return "\n\n".join(sections)
