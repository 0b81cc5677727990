"""Renders `.env.example` and `docs/configuration.md` from the settings classes, so the
documentation cannot drift from the code: a test compares them, `make config-docs` rewrites.
"""

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
CONFIGURATION_PAGE = REPO_ROOT / "docs" / "configuration.md"


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


def config_table(variables: list[Variable]) -> str:
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for var in variables:
        readers = "all services" if len(var.readers) >= 6 else ", ".join(var.readers)
        default = f"`{var.default}`" if var.default else "(empty)"
        rows.append(f"| `{var.name}` | {default} | {readers} | {var.meaning} |")
    return "\n".join(rows)


def configuration_page(variables: list[Variable]) -> str:
    """The whole of docs/configuration.md: a short introduction, then the table."""
    intro = [
        "# Configuration",
        "",
        "<!-- Generated from the settings classes by `make config-docs`; do not edit by hand. -->",
        "",
        "Every variable is read from the environment, which overrides an optional `.env` file (see",
        "`.env.example`). Each service reads only its own settings class.",
        "",
        "The same variables, each with its default and meaning, are in",
        "[`.env.example`](../.env.example), which `make config-docs` writes along with this page.",
        "Where each environment (`make run`, compose, Kubernetes) keeps its settings and keys:",
        "[Configuration per environment](operations.md#configuration-per-environment).",
    ]
    return "\n".join([*intro, "", config_table(variables)]) + "\n"


def main() -> int:
    variables = collect()
    (REPO_ROOT / ".env.example").write_text(env_example(variables))
    CONFIGURATION_PAGE.write_text(configuration_page(variables))
    print("wrote .env.example and docs/configuration.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
