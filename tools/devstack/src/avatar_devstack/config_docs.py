"""Renders `.env.example` and README's configuration table from the settings classes, so the
documentation cannot drift from the code: a test compares them, `make config-docs` rewrites.
"""

import re
import sys
from dataclasses import dataclass, field

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.settings import StackSettings
from avatar_shared.registry import APPS, load

# Who reads each variable: every app of the registry, and the dev runner.
READERS: dict[str, type[BaseSettings]] = {
    **{spec.name: load(spec.settings_class) for spec in APPS},
    "make run (gateway)": StackSettings,
}
# Read by Traefik's dynamic config (a Go template), not by a settings class.
GATEWAY_ONLY = {
    "CHAT_URLS": ("the CHAT_URL of make run", "Comma-separated replicas the gateway balances "
                  "across (likewise TTS_URLS, CHARACTERS_URLS, GEN3D_URLS, AUTH_URLS, EDGE_URLS)."),
}  # fmt: skip
TABLE_START, TABLE_END = "<!-- config-table:start -->", "<!-- config-table:end -->"


@dataclass
class Variable:
    name: str
    default: str
    meaning: str
    readers: list[str] = field(default_factory=list)


def collect() -> list[Variable]:
    found: dict[str, Variable] = {}
    for reader, settings_class in READERS.items():
        for name, info in settings_class.model_fields.items():
            var = found.setdefault(
                name.upper(),
                # A docstring that wraps holds line breaks: one line here.
                Variable(
                    name.upper(),
                    "" if info.is_required() else _text(info.default),
                    " ".join((info.description or "").split()),
                ),
            )
            var.readers.append(reader)
    for name, (default, meaning) in GATEWAY_ONLY.items():
        found[name] = Variable(name, default, meaning, ["gateway"])
    return sorted(found.values(), key=lambda v: (len(v.readers) < 6, v.readers[0], v.name))


def _text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value).lower() if isinstance(value, bool) else str(value)


def env_example(variables: list[Variable]) -> str:
    lines = [
        "# Avatar Forge configuration: every variable, with its default and meaning.",
        "# Copy to .env to change values; real environment variables override .env.",
        "# Generated from the settings classes by `make config-docs`; do not edit by hand.",
    ]
    for var in variables:
        lines += ["", f"# {var.meaning} (read by: {', '.join(var.readers)})"]
        lines.append(f"{'# ' if var.name in GATEWAY_ONLY else ''}{var.name}={var.default}")
    return "\n".join(lines) + "\n"


def readme_table(variables: list[Variable]) -> str:
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for var in variables:
        readers = "all services" if len(var.readers) >= 6 else ", ".join(var.readers)
        default = f"`{var.default}`" if var.default else "(empty)"
        rows.append(f"| `{var.name}` | {default} | {readers} | {var.meaning} |")
    return "\n".join(rows)


def readme_with_table(readme: str, variables: list[Variable]) -> str:
    block = f"{TABLE_START}\n{readme_table(variables)}\n{TABLE_END}"
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    return pattern.sub(lambda _: block, readme)


def main() -> int:
    variables = collect()
    (REPO_ROOT / ".env.example").write_text(env_example(variables))
    readme = REPO_ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text(), variables))
    print("wrote .env.example and README.md's configuration table", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
