"""The characters service's part of signing in (avatar_shared.adoption): what an anonymous
browser made here, its characters and its personas, becomes the account's.

A peer's call only (auth's, at a sign-in): not in the OpenAPI document, not routed by the
gateway, and refused (403 not_a_peer) without a valid peer signature. Not counted against
CHARACTER_WRITES_PER_MIN: the caller is auth, once per sign-in, not a user.
"""

from fastapi import APIRouter

from avatar_characters.deps import CharactersDep, PersonasDep
from avatar_shared.adoption import ADOPT_PATH, Adopted, VerifiedAdoption
from avatar_shared.envelope import Envelope, ok

router = APIRouter(include_in_schema=False)


@router.post(ADOPT_PATH, response_model=Envelope[Adopted])
async def adopt(
    adoption: VerifiedAdoption, chars: CharactersDep, personas: PersonasDep
) -> Envelope[Adopted]:
    # One kind after the other: each record moves in a script of its own either way.
    from_id, to_id = adoption.from_id, adoption.to
    return ok(
        {
            "characters": await chars.adopt(from_id, to_id),
            "personas": await personas.adopt(from_id, to_id),
        }
    )
