"""Filters and cursor pagination of the preset and user-character listings.

Cursors are keyset positions, written out plainly so the OpenAPI document can say exactly
which strings are cursors (a pattern): any string of that form is a position, whether or not
an item sits there, and a page starts just after it. Items added or removed meanwhile never
shift a page.
- presets: the position in the presets file of the page's last item (`12`);
- a user's characters: its creation score and id (`1795562062.7026203:usr_…`), newest first.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import Query

from avatar_characters.schemas import Character, CharacterPage
from avatar_characters.store import PageKey

PRESET_CURSOR = r"^[0-9]{1,6}$"
OWN_CURSOR = r"^[0-9]{1,12}(\.[0-9]{1,17})?:[A-Za-z0-9_-]{1,64}$"


def matches(character: Character, category: str | None, tag: str | None, q: str | None) -> bool:
    if category and character.category != category:
        return False
    if tag and tag not in character.tags:
        return False
    if q:
        needle = q.casefold()
        return needle in character.name.casefold() or needle in character.description.casefold()
    return True


async def preset_cursor(
    cursor: Annotated[
        str | None, Query(pattern=PRESET_CURSOR, description="next_cursor of the previous page")
    ] = None,
) -> int | None:
    return int(cursor) if cursor is not None else None


async def own_cursor(
    cursor: Annotated[
        str | None, Query(pattern=OWN_CURSOR, description="next_cursor of the previous page")
    ] = None,
) -> PageKey | None:
    if cursor is None:
        return None
    score, character_id = cursor.split(":", 1)
    return float(score), character_id


def own_cursor_of(key: PageKey) -> str:
    return f"{key[0]!r}:{key[1]}"


class ListQuery:
    """`category`, `tag`, `q` (name/description search) and a page of `limit`."""

    def __init__(self, category: str | None, tag: str | None, q: str | None, limit: int) -> None:
        self.category, self.tag, self.q, self.limit = category, tag, q, limit

    def keeps(self, character: Character) -> bool:
        return matches(character, self.category, self.tag, self.q)

    def presets_page(
        self, presets: list[Character], position: Callable[[Character], int], after: int | None
    ) -> CharacterPage:
        """A page of the presets (in memory, in the file's order)."""
        selected = [c for c in presets if self.keeps(c) and (after is None or position(c) > after)]
        chunk, more = selected[: self.limit], len(selected) > self.limit
        next_cursor = str(position(chunk[-1])) if more else None
        return CharacterPage(characters=chunk, next_cursor=next_cursor)


async def list_query(
    category: Annotated[str | None, Query(max_length=50)] = None,
    tag: Annotated[str | None, Query(max_length=30)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ListQuery:
    return ListQuery(category, tag, q, limit)


def stored_page(characters: list[Character], last: PageKey | None) -> CharacterPage:
    next_cursor = own_cursor_of(last) if last is not None else None
    return CharacterPage(characters=characters, next_cursor=next_cursor)
