"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated, TypedDict

from fastapi import Depends, Header, Request

from avatar_characters.listing import ListQuery, list_query
from avatar_characters.personas.service import PersonaService
from avatar_characters.service import CharacterService
from avatar_characters.store import PageKey
from avatar_shared.owned import Owner
from avatar_shared.pages import INDEX, TIME_AND_ID
from avatar_shared.rate import CallerDep
from avatar_shared.state import lifespan_state


class CharactersState(TypedDict):
    """What the characters lifespan adds to the base state (see app.py)."""

    characters: CharacterService
    personas: PersonaService


async def _characters(request: Request) -> CharacterService:
    return lifespan_state(request, CharactersState)["characters"]


async def _personas(request: Request) -> PersonaService:
    return lifespan_state(request, CharactersState)["personas"]


async def _writer(caller: CallerDep, request: Request) -> Owner:
    """The caller of a write, once the write is counted against their rate: the owner of
    what it stores (an anonymous one with their client address, whose budgets they share)."""
    await (await _characters(request)).writes.hit(caller.key)
    return Owner(caller.user_id, caller.address_key)


async def _lore_tester(caller: CallerDep, request: Request) -> str:
    """The caller of a lorebook test, once the test is counted against their rate (a POST:
    the same-origin rule of writes holds, and AUTH_REQUIRED asks for a sign-in)."""
    await (await _characters(request)).lore_tests.hit(caller.key)
    return caller.user_id


async def _if_match(
    if_match: Annotated[
        str | None,
        Header(
            description="Change it only if it is still the version read: its ETag (from "
            "GET, PUT or PATCH); another answers 412 precondition_failed. Left out, or `*`: "
            "whatever it is now."
        ),
    ] = None,
) -> frozenset[str] | None:
    """The versions an If-Match header names (strong entity tags; a weak one never matches,
    RFC 9110), or None when any will do."""
    if if_match is None or if_match.strip() == "*":
        return None
    tags = (tag.strip() for tag in if_match.split(","))
    return frozenset(t[1:-1] for t in tags if len(t) >= 2 and t[0] == t[-1] == '"')


CharactersDep = Annotated[CharacterService, Depends(_characters)]
PersonasDep = Annotated[PersonaService, Depends(_personas)]
Listing = Annotated[ListQuery, Depends(list_query)]
# Cursors are keyset positions (avatar_shared.pages): a preset's place in the presets file; a
# user character's (or persona's) creation time and id.
PresetCursor = Annotated[int | None, Depends(INDEX.query())]
OwnCursor = Annotated[PageKey | None, Depends(TIME_AND_ID.query())]
# The versions a write's If-Match names (None: any): a change to another is 412.
IfMatchDep = Annotated[frozenset[str] | None, Depends(_if_match)]
# A write's caller, after CHARACTER_WRITES_PER_MIN allowed it.
Writer = Annotated[Owner, Depends(_writer)]
# The user id of a lorebook test's caller, after LORE_TESTS_PER_MIN allowed it.
LoreTesterId = Annotated[str, Depends(_lore_tester)]
