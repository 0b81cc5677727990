"""Reads the external contract (../shared/spec/API.md) so tests check against it directly."""

import re
from pathlib import Path

API_MD = Path(__file__).resolve().parents[2] / "shared" / "spec" / "API.md"

# Headings such as "### `POST /api/chat`" and bullets such as "- `GET /api/characters` — ...".
_ENDPOINT = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


# Upstream calls API.md names next to ours; they are the GPU box's, not our paths.
UPSTREAM_CALLS = {
    ("GET", "/api/tags"),
    ("GET", "/api/version"),
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/tts"),
    ("POST", "/tts"),
}


def contract_endpoints() -> set[tuple[str, str]]:
    """Every external (method, path) of API.md, path parameters normalised to `{}`."""
    named = {(m, normalise(p)) for m, p in _ENDPOINT.findall(API_MD.read_text())}
    return named - UPSTREAM_CALLS


def normalise(path: str) -> str:
    """`/a/{id}` and `/a/<id>` become `/a/{}`; API.md's `/a/...` (anything below) `/a/*`."""
    path = re.sub(r"\{[^}]+\}|<[^>]+>", "{}", path.split("?")[0])
    path = re.sub(r"\.\.\.$", "*", path)
    return path.rstrip("/") or "/"


def missing_from(served: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Contract endpoints no served path covers (a `*` path is covered by any below it)."""

    def covered(method: str, path: str) -> bool:
        if path.endswith("/*"):
            prefix = path[:-1]
            return any(m == method and p.startswith(prefix) for m, p in served)
        return (method, path) in served

    return {(m, p) for m, p in contract_endpoints() if not covered(m, p)}
