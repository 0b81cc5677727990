"""Reading what an LLM server sends: JSON bodies, its error messages and usage counts; any
malformed part is a 502 `llm_error` naming it.

The server's own error texts are logged, never passed to clients: they can name models,
paths and internals of the GPU box. The client gets the code and a message of ours."""

import json
import logging
import re
from typing import Any

import orjson

from avatar_chat.errors import ContextTooLong, LlmError


def json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """`text` parsed as a JSON object, or a 502 naming `what` was malformed. (orjson: each
    line of a streamed reply is one, and the stdlib's parser cost five times as much: 1.8 us a
    line against 0.4.)"""
    try:
        body = orjson.loads(text)
    except ValueError as exc:
        body = _with_bad_bytes_replaced(text, exc, what)
    if not isinstance(body, dict):
        raise malformed(f"{what} (not a JSON object)")
    return body


def _with_bad_bytes_replaced(text: str | bytes, error: ValueError, what: str) -> Any:
    """JSON whose only fault is bytes that are not UTF-8 (a server that cut a Korean
    character at a token boundary) is read with U+FFFD in their place, as a text decoder
    would: one odd character rather than a failed reply."""
    if not isinstance(text, bytes):
        raise malformed(f"{what} (not JSON)") from error
    try:
        return orjson.loads(text.decode(errors="replace"))
    except ValueError as exc:
        raise malformed(f"{what} (not JSON)") from exc


log = logging.getLogger("avatar.llm")


def failed(says: object, status: int | None = None) -> LlmError:
    """A 502 for a failure the server reported (`says`: its text or its error object); what
    it said goes to the log."""
    text = says if isinstance(says, str) else upstream_text(says)
    log.warning("language model server failed (status %s): %s", status or "200", text[:500])
    if status is None:
        return LlmError("The language model server failed while answering.")
    return LlmError(f"The language model server answered {status}.")


# vLLM's refusal of a prompt past its window names the prompt's count: "This model's maximum
# context length is L tokens. However, you requested N tokens (P in the messages, M in the
# completion)..." or "... you requested P tokens in the messages, Please reduce..." (older),
# "... However, your request has P input tokens..." or "... and your request has P input
# tokens (M > L - P)." (newer), "... However, you requested M output tokens and your prompt
# contains [at least] P input tokens, for a total of..." (current; "at least": it stopped
# counting past the window). "... your prompt contains C characters" gives no count.
PROMPT_COUNT = re.compile(
    r"(\d+) in the messages|(\d+) tokens in the messages|request has (\d+) input tokens"
    r"|prompt contains (?:at least )?(\d+) input tokens|passed (\d+) input tokens"
)
# How vLLM says it: "... maximum context length is L tokens ..." (most wordings), or "You
# passed P input tokens and requested M output tokens. However, the model's context length is
# only L tokens, resulting in a maximum input length of X tokens." (its renderer's).
TOO_LONG = ("maximum context length", "context length is only")


def context_refused(body: bytes) -> ContextTooLong | None:
    """A 400's body read as a refusal of the prompt's length (None: it is something else)."""
    text = upstream_message(body)
    if not any(words in text for words in TOO_LONG):
        return None
    log.warning("language model server refused the prompt's length: %s", text[:500])
    found = PROMPT_COUNT.search(text)
    return ContextTooLong(int(next(filter(None, found.groups()))) if found else None)


def upstream_message(body: bytes) -> str:
    try:
        return upstream_text(json.loads(body))
    except ValueError:
        return body[:200].decode(errors="replace") or "(no body)"


def upstream_text(body: object) -> str:
    """Ollama says {"error": "..."}; OpenAI-compatible servers {"error": {"message": ...}}
    (older vLLM a flat {"message": ...}); anything else is quoted, shortened."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if error:
        return str(error)
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return json.dumps(body)[:200]


def positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def token_count(body: dict[str, Any], key: str) -> int:
    """A usage count from the server: missing means 0, anything but an integer is malformed
    (it would otherwise poison the session's running totals)."""
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(f"usage ({key})")
    return value


def malformed(what: str) -> LlmError:
    return LlmError(f"The language model server sent a malformed {what}.")
