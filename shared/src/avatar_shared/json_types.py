"""Request field types that accept exactly what their JSON Schema type says: no strings for
numbers, no 0/1 for booleans (pydantic's lax mode would take them, so a request the OpenAPI
document calls invalid would pass), and integers written as `1.0`, which JSON Schema counts
as integers."""

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def integral_float(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(integral_float), Strict()]

# A character that str.strip() keeps (its white space set, written out so that Python, the
# validator's Rust regex and a client's ECMAScript regex all read the same set): text with it
# is not empty once stripped.
SOME_TEXT = r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
