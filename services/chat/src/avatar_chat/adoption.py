"""The chat service's part of signing in (avatar_shared.adoption): the sessions an anonymous
browser kept here become the account's. Its conversations kept on the server are then kept
until deleted, within MAX_CONVERSATIONS_PER_USER and MAX_CONVERSATION_BYTES_PER_USER; its
records of client conversations join the account's expiring sessions while
MAX_STORED_SESSIONS_PER_USER has room. What does not fit (or is generating a reply at that
moment) stays the anonymous id's, expiring as before. Its memories (`/api/memories`) move
too, within the account's memory quotas.

A peer's call only (auth's, at a sign-in): not in the OpenAPI document, not routed by the
gateway, and refused (403 not_a_peer) without a valid peer signature.
"""

from fastapi import APIRouter

from avatar_chat.deps import ChatDep
from avatar_shared.adoption import ADOPT_PATH, Adopted, KindMoved, VerifiedAdoption
from avatar_shared.envelope import Envelope, ok

router = APIRouter(include_in_schema=False)


@router.post(ADOPT_PATH, response_model=Envelope[Adopted])
async def adopt(adoption: VerifiedAdoption, chat: ChatDep) -> Envelope[Adopted]:
    moved, kept = await chat.sessions.adopt(adoption.from_id, adoption.to)
    memories = await chat.memories.adopt(adoption.from_id, adoption.to)
    return ok({"conversations": KindMoved(moved=moved, kept=kept), "memories": memories})
