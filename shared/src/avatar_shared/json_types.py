"""Request field types that accept exactly what their JSON Schema type says: no strings for
numbers, no 0/1 for booleans (pydantic's lax mode would take them, so a request the OpenAPI
document calls invalid would pass), and integers written as `1.0`, which JSON Schema counts
as integers. And the shape stored free-form JSON must keep (check_json_shape)."""

import json
import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def integral_float(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(integral_float), Strict()]

# A character that str.strip() keeps (its white space set, written out so that Python, the
# validator's Rust regex and a client's ECMAScript regex all read the same set): text with it
# is not empty once stripped.
SOME_TEXT = r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

# Nesting of free-form JSON that is stored (a card, a lorebook's extensions and extra fields):
# deeper breaks copying it (RecursionError) and answering it (pydantic's serializer).
MAX_JSON_DEPTH = 32


def check_json_shape(
    value: object, what: str, on_text: Callable[[str], None] | None = None
) -> None:
    """Refuses (ValueError, naming it `what`) JSON nested deeper than MAX_JSON_DEPTH or holding
    a number JSON cannot write (NaN, Infinity: Python's parser takes them, strict ones do not);
    `on_text` is given every string and key. Without recursion: the point is that the value
    may be too deep to recurse into."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{what} holds NaN or Infinity, which JSON cannot carry")
        if isinstance(item, str) and on_text:
            on_text(item)
        elif isinstance(item, dict):
            if on_text:
                for key in item:
                    on_text(key)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)


def strict_json(value: object, **dumps: Any) -> str:
    """`value` as JSON that strict parsers read: a NaN or Infinity (stored before
    check_json_shape refused them) is written null, as a read answers it, never bare."""
    try:
        return json.dumps(value, allow_nan=False, **dumps)
    except ValueError:
        lenient = json.loads(json.dumps(value), parse_constant=lambda _: None)
        return json.dumps(lenient, allow_nan=False, **dumps)
