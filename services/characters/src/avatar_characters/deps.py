from typing import Annotated

from fastapi import Depends, Request

from avatar_characters.service import Characters


def _characters(request: Request) -> Characters:
    return request.app.state.characters


CharactersDep = Annotated[Characters, Depends(_characters)]
