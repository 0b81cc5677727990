"""Filters and cursor pagination shared by the preset and user-character listings."""

import base64
import binascii

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


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, offset = text.split(":", 1)
        if kind == "o" and int(offset) >= 0:
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed("cursor: not a cursor this API gave out")


def page(
    items: list[Character], cursor: str | None, limit: int
) -> tuple[list[Character], str | None]:
    start = decode_cursor(cursor)
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return chunk, encode_cursor(start + limit) if more else None
