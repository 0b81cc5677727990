"""Auth's part of signing in keeping what the browser made anonymously (the rule and the
peer call: avatar_shared.adoption): at a sign-in, each of ADOPT_PEERS is asked at once to move
the anonymous id's data to the account.

Nothing here can fail a sign-in: a peer that is down, slow, refuses, or does not serve the
path yet (404) is logged, and its data stays with the anonymous id (and its expiry) until
the next sign-in asks again (a peer moves nothing twice).
"""

import asyncio
import logging

import httpx
from pydantic import TypeAdapter, ValidationError

from avatar_auth.settings import AuthSettings
from avatar_shared.adoption import ADOPT_PATH, Adopted, Adoption, signature_headers
from avatar_shared.identity import AnonymousIds
from avatar_shared.peers import PeerClient, PeerError

logger = logging.getLogger("avatar.auth.adoption")
ADOPTED = TypeAdapter(Adopted)


class Adopter:
    def __init__(
        self, settings: AuthSettings, http: httpx.AsyncClient, anonymous: AnonymousIds
    ) -> None:
        self.anonymous = anonymous
        self.peers = [
            PeerClient(http, name, url, settings.adopt_timeout_s)
            for name, url in settings.adopt_peer_urls.items()
        ]

    async def adopt(self, anon_id: str, user_id: str) -> bool:
        """Asks every peer; True when each one answered that the anonymous id keeps nothing
        of theirs any more (none configured: False, nothing moved)."""
        try:
            adoption = Adoption(from_id=anon_id, to=user_id)
        except ValidationError:  # ids of another shape than ours: nothing can be asked
            logger.warning("anonymous data: ids no peer takes", extra={"fields": {}})
            return False
        done = await asyncio.gather(*(self._ask(peer, adoption) for peer in self.peers))
        return bool(done) and all(done)

    async def _ask(self, peer: PeerClient, adoption: Adoption) -> bool:
        fields: dict[str, object] = {
            "peer": peer.service,
            "anonymous_id": adoption.from_id,
            "signed_in_user": adoption.to,
        }
        try:
            # Signed as it is sent: the signature lives SIGNATURE_LIFETIME_S.
            headers = signature_headers(self.anonymous, adoption)
            answer = ADOPTED.validate_python(await peer.post(ADOPT_PATH, adoption.body(), headers))
        except PeerError as exc:
            fields.update(code=exc.code, reason=exc.message)
            logger.warning("anonymous data not adopted", extra={"fields": fields})
            return False
        except ValidationError:
            logger.warning("anonymous data: a malformed answer", extra={"fields": fields})
            return False
        counts = {kind: moved.model_dump() for kind, moved in answer.items()}
        logger.info("anonymous data adopted", extra={"fields": {**fields, "kinds": counts}})
        return all(moved.kept == 0 for moved in answer.values())
