"""Filters and cursor pagination shared by the preset and user-character listings."""

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from avatar_characters.schemas import Character
from avatar_shared.errors import ValidationFailed


def matches(character: Character, category: str | None, tag: str | None, q: str | None) -> bool:
    if category and character.category != category:
        return False
    if tag and tag not in character.tags:
        return False
    if q:
        needle = q.casefold()
        return needle in character.name.casefold() or needle in character.description.casefold()
    return True


SortKey = tuple[Any, ...]


def encode_cursor(key: SortKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> SortKey:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(key, list) and key:
            return tuple(key)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed("cursor: not a cursor this API gave out")


def page(
    items: list[Character], key: Callable[[Character], SortKey], cursor: str | None, limit: int
) -> tuple[list[Character], str | None]:
    """Keyset pagination: `items` are in ascending `key` order, and a cursor is the key of
    the last item sent, so items added or removed meanwhile never shift a page."""
    if cursor:
        after = decode_cursor(cursor)
        try:
            items = [item for item in items if key(item) > after]
        except TypeError as exc:  # a cursor from another listing
            raise ValidationFailed("cursor: not a cursor of this listing") from exc
    chunk = items[:limit]
    more = len(items) > limit
    return chunk, encode_cursor(key(chunk[-1])) if more else None
