"""Filters and cursor pagination of the preset and user-character listings (pages and
cursors as avatar_shared.pages makes them):
- presets: a position in the presets file (`INDEX`), in the file's order;
- a user's characters: creation time and id (`TIME_AND_ID`), newest first.
"""

from typing import Annotated

from fastapi import Query

from avatar_characters.schemas import Character, CharacterPage
from avatar_characters.store import PageKey
from avatar_shared.pages import INDEX, TIME_AND_ID, Page


def matches(character: Character, category: str | None, tag: str | None, q: str | None) -> bool:
    if category and character.category != category:
        return False
    if tag and tag not in character.tags:
        return False
    if q:
        needle = q.casefold()
        return needle in character.name.casefold() or needle in character.description.casefold()
    return True


class ListQuery:
    """`category`, `tag`, `q` (name/description search) and a page of `limit`."""

    def __init__(self, category: str | None, tag: str | None, q: str | None, limit: int) -> None:
        self.category, self.tag, self.q, self.limit = category, tag, q, limit

    def keeps(self, character: Character) -> bool:
        return matches(character, self.category, self.tag, self.q)

    def presets_page(self, presets: list[Character], after: int | None) -> CharacterPage:
        """A page of the presets (in memory, in the file's order)."""
        selected = (
            (character, position)
            for position, character in enumerate(presets)
            if (after is None or position > after) and self.keeps(character)
        )
        page = Page.of(selected, self.limit)
        return CharacterPage(characters=page.items, next_cursor=INDEX.next_of(page))


async def list_query(
    category: Annotated[str | None, Query(max_length=50)] = None,
    tag: Annotated[str | None, Query(max_length=30)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ListQuery:
    return ListQuery(category, tag, q, limit)


def stored_page(page: Page[Character, PageKey]) -> CharacterPage:
    return CharacterPage(characters=page.items, next_cursor=TIME_AND_ID.next_of(page))
