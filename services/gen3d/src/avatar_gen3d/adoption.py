"""The gen3d service's part of signing in (avatar_shared.adoption): the 3D jobs an anonymous
browser made become the account's: listed, their status and their results served to it (at
the same URLs), their files charged to it in retention. A finished job moves at once; one
queued or running moves as it ends (until then the anonymous id's, counted `kept`, its
status readable by the account too). A job whose files would pass the account's
GEN3D_MAX_BYTES_PER_USER stays the anonymous id's (`kept`). How each job moves, and what a
crash halfway leaves: `service`'s docstring.

A peer's call only (auth's, at a sign-in): not in the OpenAPI document, not routed by the
gateway, and refused (403 not_a_peer) without a valid peer signature. Not counted against
the 3D rates: the caller is auth, once per sign-in, not a user.
"""

from fastapi import APIRouter

from avatar_gen3d.deps import Gen3dDep
from avatar_shared.adoption import ADOPT_PATH, Adopted, VerifiedAdoption
from avatar_shared.envelope import Envelope, ok

KIND = "3d_jobs"

router = APIRouter(include_in_schema=False)


@router.post(ADOPT_PATH, response_model=Envelope[Adopted])
async def adopt(adoption: VerifiedAdoption, gen3d: Gen3dDep) -> Envelope[Adopted]:
    return ok({KIND: await gen3d.adopt(adoption.from_id, adoption.to)})
