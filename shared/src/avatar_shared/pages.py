"""Pages of a listing, one way for every service.

A store reads a page as `limit + 1` items, each with its position in the listing, and makes
them a `Page`: the first `limit` items and, when the extra one came (there is more), the
position of the page's last item, where the next page starts (just after it). Positions are
keyset positions, never offsets: items added or removed meanwhile never shift a page.

A position goes into a URL as a cursor, written plainly (a `Cursor`), so the OpenAPI document
can say exactly which strings are cursors (a pattern): any string of that form is a position,
whether or not an item sits there.
- characters' presets: the index of an item in the presets file (`INDEX`: `12`);
- a user's characters: their creation time and id, newest first (`TIME_AND_ID`:
  `1795562062.7026203:usr_…`);
- gen3d's jobs: their submission time, newest first (`TIME`: `1795562062.7026203`);
- chat's history: message numbers, newest first; there the position is the integer itself
  (`before` in, `next_before` out), no cursor string.
"""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query

T = TypeVar("T")  # an item
P = TypeVar("P")  # a position


@dataclass(frozen=True)
class Page(Generic[T, P]):
    items: list[T]
    next: P | None = None  # where the next page starts (just after it); None: this is the last

    @classmethod
    def of(cls, fetched: Iterable[tuple[T, P]], limit: int) -> "Page[T, P]":
        """The page of `fetched`: items with their positions, in the listing's order, read
        `limit + 1` at most (what follows is not read)."""
        items: list[T] = []
        last: P | None = None
        for item, position in fetched:
            if len(items) == limit:  # one more than the page: there is a next one
                return cls(items, last)
            items.append(item)
            last = position
        return cls(items)


@dataclass(frozen=True)
class Cursor(Generic[P]):
    """How a position is written in a URL: `pattern`, the form of every cursor (shown in the
    OpenAPI document), `write` and `read`."""

    pattern: str
    write: Callable[[P], str]
    read: Callable[[str], P]

    def next_of(self, page: Page[Any, P]) -> str | None:
        """The page's `next_cursor`."""
        return None if page.next is None else self.write(page.next)

    def query(self) -> Callable[..., Awaitable[P | None]]:
        """A dependency: the position in the `cursor` query parameter, None when absent."""

        async def cursor(
            cursor: Annotated[
                str | None,
                Query(pattern=self.pattern, description="next_cursor of the previous page"),
            ] = None,
        ) -> Any:
            return None if cursor is None else self.read(cursor)

        return cursor


_TIME = r"[0-9]{1,12}(\.[0-9]{1,17})?"  # Unix seconds, as repr() writes a float


def _read_time_and_id(cursor: str) -> tuple[float, str]:
    time, item_id = cursor.split(":", 1)
    return float(time), item_id


INDEX: Cursor[int] = Cursor(r"^[0-9]{1,6}$", str, int)
TIME: Cursor[float] = Cursor(rf"^{_TIME}$", repr, float)
TIME_AND_ID: Cursor[tuple[float, str]] = Cursor(
    rf"^{_TIME}:[A-Za-z0-9_-]{{1,64}}$", lambda key: f"{key[0]!r}:{key[1]}", _read_time_and_id
)
