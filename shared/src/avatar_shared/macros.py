"""The role-play frontends' macros: `{{char}}`, `{{user}}` (and their old forms `<BOT>`,
`<USER>`) and `{{original}}`, case-insensitive; any other `{{...}}` is left as it is. They
are expanded when a text is shown or a prompt is built, never stored expanded, so a renamed
persona or character applies to old texts too.

The one expander of the services: chat's prompt builder and the characters service's
greetings (GET /api/characters/{id}/greetings) expand the same way."""

import re
from dataclasses import dataclass

MACRO = re.compile(r"\{\{(char|user|original)\}\}|<(BOT|USER)>", re.IGNORECASE)
OLD_FORMS = {"bot": "char", "user": "user"}


@dataclass(frozen=True)
class Macros:
    char: str  # the character's name as the user sees it: its nickname, else its name
    user: str  # the user's name (their persona's, else a default)
    original: str = ""  # what `{{original}}` stands for in the text being expanded

    def expand(self, text: str) -> str:
        return MACRO.sub(self._value, text)

    def with_original(self, original: str) -> "Macros":
        return Macros(self.char, self.user, original)

    def _value(self, found: re.Match[str]) -> str:
        name = (found.group(1) or OLD_FORMS[found.group(2).lower()]).lower()
        return {"char": self.char, "user": self.user, "original": self.original}[name]
