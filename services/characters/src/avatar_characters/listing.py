"""Filters and cursor pagination shared by the preset and user-character listings."""

import base64
import binascii
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query

from avatar_characters.schemas import Character, CharacterPage
from avatar_characters.store import PageKey
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


class ListQuery:
    """`category`, `tag`, `q` (name/description search), then a page of `limit` after `cursor`."""

    def __init__(
        self,
        category: Annotated[str | None, Query(max_length=50)] = None,
        tag: Annotated[str | None, Query(max_length=30)] = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> None:
        self.category, self.tag, self.q, self.cursor, self.limit = category, tag, q, cursor, limit

    def keeps(self, character: Character) -> bool:
        return matches(character, self.category, self.tag, self.q)

    def apply(
        self, characters: list[Character], key: Callable[[Character], SortKey]
    ) -> CharacterPage:
        """A page of an in-memory listing (the presets)."""
        selected = [c for c in characters if self.keeps(c)]
        chunk, next_cursor = page(sorted(selected, key=key), key, self.cursor, self.limit)
        return CharacterPage(characters=chunk, next_cursor=next_cursor)

    def after(self) -> PageKey | None:
        """Where a page of a stored listing starts: the key its cursor carries."""
        if not self.cursor:
            return None
        key = decode_cursor(self.cursor)
        match key:
            case (int() | float() as score, str() as character_id):
                return float(score), character_id
        raise ValidationFailed("cursor: not a cursor of this listing")


def stored_page(characters: list[Character], last: PageKey | None) -> CharacterPage:
    return CharacterPage(
        characters=characters, next_cursor=encode_cursor(last) if last is not None else None
    )
