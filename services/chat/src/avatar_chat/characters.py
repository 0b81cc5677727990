"""Characters come from the characters service over HTTP, cached briefly in this process."""

import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from avatar_chat.errors import CharacterNotFound, CharactersUnavailable


@dataclass(frozen=True)
class CharacterProfile:
    id: str
    persona: str
    voice_id: str | None


class CharacterDirectory:
    def __init__(self, http: httpx.AsyncClient, base_url: str, ttl_s: float) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, CharacterProfile]] = {}

    async def get(self, character_id: str) -> CharacterProfile:
        cached = self._cache.get(character_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        profile = await self._fetch(character_id)
        self._cache[character_id] = (time.monotonic() + self.ttl_s, profile)
        return profile

    async def _fetch(self, character_id: str) -> CharacterProfile:
        url = f"{self.base_url}/api/characters/{quote(character_id, safe='')}"
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            raise CharactersUnavailable() from exc
        if response.status_code == 404:
            raise CharacterNotFound(character_id)
        if response.status_code != 200:
            raise CharactersUnavailable(
                f"The characters service answered {response.status_code}; try again later."
            )
        try:
            data = response.json()["data"]
            return CharacterProfile(data["id"], data["persona"], data.get("voice_id"))
        except (ValueError, KeyError, TypeError) as exc:
            raise CharactersUnavailable(
                "The characters service sent a malformed character."
            ) from exc
