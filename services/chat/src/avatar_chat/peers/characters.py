"""The characters service: a character's persona and voice (`GET /api/characters/{id}`),
cached briefly in this process."""

from dataclasses import dataclass
from urllib.parse import quote

import httpx

from avatar_shared.peers import PeerClient, PeerRejected, PeerUnavailable
from avatar_shared.ttl_cache import KeyedTtlCache

# Characters are named by clients: the cache must not grow with every id tried.
MAX_CACHED = 1024


@dataclass(frozen=True)
class CharacterProfile:
    id: str
    persona: str
    voice_id: str | None


class CharacterDirectory:
    def __init__(self, http: httpx.AsyncClient, characters_url: str, ttl_s: float) -> None:
        self.peer = PeerClient(http, "characters", characters_url)
        self.ttl_s = ttl_s
        self._cache: KeyedTtlCache[str, CharacterProfile] = KeyedTtlCache(MAX_CACHED)

    async def get(self, character_id: str) -> CharacterProfile:
        return await self._cache.get(character_id, lambda: self._fetch(character_id))

    async def _fetch(self, character_id: str) -> tuple[CharacterProfile, float]:
        try:
            data = await self.peer.get(f"/api/characters/{quote(character_id, safe='')}")
        except PeerRejected as exc:
            if exc.status_code == 404:
                raise  # its own 404 character_not_found, relayed as it is
            raise PeerUnavailable("characters", f"refused the request: {exc.message}") from exc
        try:
            profile = CharacterProfile(data["id"], data["persona"], data.get("voice_id"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise PeerUnavailable("characters", "sent a malformed character") from exc
        return profile, self.ttl_s
