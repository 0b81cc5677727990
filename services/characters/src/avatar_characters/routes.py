from fastapi import APIRouter

from avatar_characters.schemas import Character, CharacterIn, CharacterList
from avatar_shared.envelope import Envelope
from avatar_shared.errors import ERROR_RESPONSES, not_built
from avatar_shared.identity import UserId

router = APIRouter(prefix="/api/characters", tags=["characters"], responses=ERROR_RESPONSES)


@router.get("/presets", response_model=Envelope[CharacterList])
async def list_presets() -> Envelope[CharacterList]:
    not_built("GET /api/characters/presets")


@router.get("", response_model=Envelope[CharacterList])
async def list_own(user_id: UserId) -> Envelope[CharacterList]:
    not_built("GET /api/characters")


@router.post("", response_model=Envelope[Character], status_code=201)
async def create(body: CharacterIn, user_id: UserId) -> Envelope[Character]:
    not_built("POST /api/characters")


@router.get("/{character_id}", response_model=Envelope[Character])
async def get_one(character_id: str, user_id: UserId) -> Envelope[Character]:
    not_built("GET /api/characters/{character_id}")


@router.put("/{character_id}", response_model=Envelope[Character])
async def replace(character_id: str, body: CharacterIn, user_id: UserId) -> Envelope[Character]:
    not_built("PUT /api/characters/{character_id}")


@router.delete("/{character_id}")
async def delete(character_id: str, user_id: UserId) -> Envelope[dict]:
    not_built("DELETE /api/characters/{character_id}")
