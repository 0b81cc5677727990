"""Structured outputs of the LLM emulators (Ollama's ``format``, OpenAI's ``response_format``).

A real server constrains the model's tokens to a JSON schema (or to any JSON object); the
emulators build a JSON value that follows the schema, filled with what the prompt scripts, so
tests decide what "the model" answers (the convention is in ``avatar_emulators.replies``).

Supported schema subset: ``type`` (object, array, string, integer, number, boolean, null; a list
of types: the first), ``properties``, ``required``, ``items``, ``enum``, ``const``,
``minItems``/``maxItems``, ``anyOf``/``oneOf``/``allOf`` (the first branch) and local ``$ref``
(``#/$defs/...``). Other keywords (``title``, ``description``, ``pattern``, ...) are accepted and
ignored. ``check_schema`` refuses what is malformed, where a real server's grammar compiler
would refuse the schema.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A scripted item: [[name=value; name2=value2]] (a value holds anything but ";" and "]]").
ITEM_PATTERN = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
MAX_DEPTH = 32  # deeper than this, a schema is refused (it cannot have a finite answer)
# Below this depth an object carries all its properties; deeper, only the required ones, so an
# optional recursive property ($ref to itself) ends.
FULL_DEFAULTS_DEPTH = 8
_SCALAR_DEFAULTS: dict[str, Any] = {
    "string": "",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "null": None,
}
_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# Whitespace the token rule would not give back: runs of spaces and any other whitespace.
_UNSAFE_WHITESPACE = re.compile(r"(?<= ) |[^\S ]")

Item = dict[str, str]


class SchemaError(ValueError):
    """A schema the emulators cannot follow (malformed, or without a finite answer)."""


@dataclass(frozen=True)
class JsonOutput:
    """A structured-output request: JSON text, following `schema` when there is one."""

    schema: dict[str, Any] | None = None


def scripted_items(text: str) -> list[Item]:
    """The scripted items of `text`, in order, identical ones once (items without pairs skipped)."""
    items: list[Item] = []
    for match in ITEM_PATTERN.finditer(text):
        item = _pairs(match.group(1))
        if item and item not in items:
            items.append(item)
    return items


def _pairs(body: str) -> Item:
    item: Item = {}
    for part in body.split(";"):
        name, equals, value = part.partition("=")  # the first "=": a value may hold more
        if equals and name.strip():
            item[name.strip()] = value.strip()
    return item


def structured_content(output: JsonOutput, reply: str, user_text: str) -> str:
    """The JSON text a model held to `output` answers; `reply` is the ordinary reply's text and
    `user_text` the last user message (where the scripted items are)."""
    items = scripted_items(user_text)
    if output.schema is None:
        # JSON mode: any object; the emulator's is the reply and the items it was given.
        value: Any = {"content": reply, **({"items": items} if items else {})}
    else:
        value = _Answer(output.schema, reply, items).top(output.schema, 0)
    return dump(value)


def dump(value: Any) -> str:
    """JSON text (default separators) whose whitespace-separated words rejoin to itself.

    Replies are streamed one word per token and rejoined with single spaces, so whitespace
    inside strings that is not a single space is written as a JSON escape (same value)."""
    text = json.dumps(value, ensure_ascii=False)
    return _UNSAFE_WHITESPACE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def check_schema(schema: Any) -> None:
    """Raise SchemaError when `schema` is not a well-formed schema of the supported subset."""
    _check(schema, schema, set(), 0)


def _check(schema: Any, root: Any, seen_refs: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SchemaError("the schema nests too deep")
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be an object")
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if not kinds or any(kind not in TYPES for kind in kinds):
        raise SchemaError(f"unknown type {schema.get('type')!r}")
    if "$ref" in schema:
        target = _pointer(root, schema["$ref"])  # refuses what is not a local reference
        if schema["$ref"] not in seen_refs:  # a recursive schema: check each target once
            seen_refs.add(schema["$ref"])
            _check(target, root, seen_refs, depth + 1)
    for sub in _subschemas(schema):
        _check(sub, root, seen_refs, depth + 1)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError("required must be an array of strings")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise SchemaError("enum must be a non-empty array")
    for key in ("minItems", "maxItems"):
        count = schema.get(key, 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SchemaError(f"{key} must be a non-negative integer")


def _subschemas(schema: dict[str, Any]) -> list[Any]:
    """The schemas nested in `schema` (malformed containers raise SchemaError)."""
    subs: list[Any] = []
    for key in ("properties", "$defs", "definitions"):
        mapping = schema.get(key, {})
        if not isinstance(mapping, dict):
            raise SchemaError(f"{key} must be an object")
        subs.extend(mapping.values())
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key, [None])
        if not isinstance(branches, list) or not branches:
            raise SchemaError(f"{key} must be a non-empty array")
        subs.extend(b for b in branches if b is not None)
    if "items" in schema:
        subs.append(schema["items"])
    return subs


def _pointer(root: Any, ref: Any) -> Any:
    """Resolve a local JSON pointer ("#/$defs/Name"); remote references are not followed."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError(f"only local references are supported, not {ref!r}")
    node = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            raise SchemaError(f"unresolvable reference {ref!r}")
        node = node[key]
    return node


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind is None:  # untyped: what its keywords imply
        return "object" if "properties" in schema else "array" if "items" in schema else "string"
    return str(kind)


def _properties(schema: dict[str, Any], depth: int) -> dict[str, Any]:
    """The properties to answer: all of them, but deep down only the required ones (so that an
    optional property that refers back to its object ends)."""
    properties: dict[str, Any] = schema.get("properties", {})
    if depth < FULL_DEFAULTS_DEPTH:
        return properties
    required = schema.get("required", [])
    return {name: sub for name, sub in properties.items() if name in required}


def _sized(values: list[Any], schema: dict[str, Any], filler: Callable[[], Any]) -> list[Any]:
    """`values` cut to maxItems, or padded to minItems with `filler()`."""
    values = values[: schema.get("maxItems", len(values))]
    return values + [filler() for _ in range(schema.get("minItems", 0) - len(values))]


def _convert(kind: str, value: str) -> Any:
    """A scripted value as the schema's type; left a string when it does not parse (a model
    may misbehave, and tests can script that)."""
    if kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if kind == "number" and _NUMBER.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return int(value) if _INTEGER.fullmatch(value) else number
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "null" and value == "null":
        return None
    return value


class _Answer:
    """Builds the answer to one schema: `root` resolves $ref, `reply` fills top-level strings,
    `items` fill the arrays."""

    def __init__(self, root: dict[str, Any], reply: str, items: list[Item]) -> None:
        self.root = root
        self.reply = reply
        self.items = items

    def resolve(self, schema: Any, depth: int) -> dict[str, Any]:
        """Follow $ref and take the first anyOf/oneOf/allOf branch, until a plain schema."""
        if depth > MAX_DEPTH:
            raise SchemaError("the schema has no finite answer")
        while True:
            if "$ref" in schema:
                schema = _pointer(self.root, schema["$ref"])
            elif branches := schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf"):
                schema = branches[0]
            else:
                return dict(schema)
            depth += 1
            if depth > MAX_DEPTH:
                raise SchemaError("the schema refers to itself without end")

    def top(self, schema: Any, depth: int) -> Any:
        """A value outside the scripted items: prose for strings, the items for arrays."""
        schema = self.resolve(schema, depth)
        kind = _kind(schema)
        if "const" in schema or "enum" in schema or kind not in ("string", "object", "array"):
            return self.default(schema, depth)
        if kind == "string":
            return self.reply
        if kind == "object":
            return {k: self.top(sub, depth + 1) for k, sub in _properties(schema, depth).items()}
        sub = schema.get("items", {})
        values = [self.item(sub, item, depth + 1) for item in self.items]
        return _sized(values, schema, lambda: self.default(sub, depth + 1))

    def item(self, schema: Any, item: Item, depth: int) -> Any:
        """One scripted item: an object takes its pairs by name (the others get defaults);
        anything else is the value of its first pair."""
        schema = self.resolve(schema, depth)
        if _kind(schema) != "object":
            return self.given(schema, next(iter(item.values())), depth)
        return {
            name: self.given(sub, item[name], depth + 1)
            if name in item
            else self.default(sub, depth + 1)
            for name, sub in _properties(schema, depth).items()
        }

    def given(self, schema: Any, value: str, depth: int) -> Any:
        """A scripted value for `schema`: converted to its type (an enum's value as given)."""
        schema = self.resolve(schema, depth)
        kind = _kind(schema)
        if kind == "array":
            return [self.given(schema.get("items", {}), value, depth + 1)]
        if kind == "object":
            return self.default(schema, depth)
        return _convert(kind, value)

    def default(self, schema: Any, depth: int) -> Any:
        """The type's default: the const or first enum value, "", 0, false, null, [] (padded
        to minItems) or an object of defaults."""
        schema = self.resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        kind = _kind(schema)
        if kind == "array":
            sub = schema.get("items", {})
            return _sized([], schema, lambda: self.default(sub, depth + 1))
        if kind != "object":
            return _SCALAR_DEFAULTS[kind]
        return {k: self.default(sub, depth + 1) for k, sub in _properties(schema, depth).items()}
