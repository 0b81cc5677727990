"""What the routes need, as `Annotated` dependencies read from the lifespan state."""

from typing import Annotated

from fastapi import Depends, Request

from avatar_characters.listing import ListQuery
from avatar_characters.service import CharacterService


def _characters(request: Request) -> CharacterService:
    return request.state.characters


CharactersDep = Annotated[CharacterService, Depends(_characters)]
Listing = Annotated[ListQuery, Depends()]
