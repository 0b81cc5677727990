"""The characters service: a character's prompt fields and voice (`GET /api/characters/{id}`),
cached in this process until characters announces a change of it (avatar_shared.changes) or
for CHARACTER_CACHE_S at most (while that channel is out of reach); and a caller's user
persona (`GET /api/personas/{id}`, or `/default` their default one: owner-only reads made with
the caller's credentials, never cached: they are one caller's)."""

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis

from avatar_chat.prompt.builder import CharacterCard, UserPersona
from avatar_shared.changes import CHARACTERS_CHANGED, ChangeFeed
from avatar_shared.identity import Identity
from avatar_shared.lorebook import STORED, Lorebook
from avatar_shared.peers import PeerClient, PeerRejected, PeerUnavailable
from avatar_shared.sampling import GenerationDefaults
from avatar_shared.ttl_cache import KeyedTtlCache

# Characters are named by clients: the cache must not grow with every id tried. A character
# with its lorebook may hold up to about 200,000 characters of lore (MAX_BOOK_CHARS).
MAX_CACHED = 256


@dataclass(frozen=True)
class CharacterProfile:
    id: str
    card: CharacterCard  # its `persona` is the card's description
    voice_id: str | None


class CharacterDirectory:
    def __init__(self, http: httpx.AsyncClient, characters_url: str, ttl_s: float) -> None:
        self.peer = PeerClient(http, "characters", characters_url)
        self.ttl_s = ttl_s
        self._cache: KeyedTtlCache[str, CharacterProfile] = KeyedTtlCache(MAX_CACHED)
        self._feed: ChangeFeed | None = None

    def follow_changes(self, redis: Redis) -> None:
        """From now until `close`: a character edited, deleted or moved at a sign-in is
        dropped from the cache as soon as characters says so."""
        self._feed = ChangeFeed(redis, CHARACTERS_CHANGED, self._cache.forget, self._cache.clear)
        self._feed.start()

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()

    async def get(self, character_id: str) -> CharacterProfile:
        return await self._cache.get(character_id, lambda: self._fetch(character_id))

    async def user_persona(self, persona_id: str, caller: Identity) -> UserPersona:
        data = await self._read(f"/api/personas/{quote(persona_id, safe='')}", caller)
        try:
            return UserPersona(str(data["name"]), str(data.get("description") or ""))
        except (KeyError, TypeError) as exc:
            raise PeerUnavailable("characters", "sent a malformed persona") from exc

    async def default_persona_id(self, caller: Identity) -> str | None:
        """The id of the caller's default persona (`GET /api/personas/default`, read with the
        caller's credentials), None when they chose none."""
        try:
            data = await self._read("/api/personas/default", caller)
        except PeerRejected as exc:
            if exc.code == "no_default_persona":
                return None
            # Another 404 (a characters service without the route) is not the caller's fault.
            raise PeerUnavailable("characters", f"refused the request: {exc.message}") from exc
        try:
            return str(data["id"])
        except (KeyError, TypeError) as exc:
            raise PeerUnavailable("characters", "sent a malformed persona") from exc

    async def greetings(
        self, character_id: str, persona_id: str | None, caller: Identity
    ) -> list[tuple[int, str]]:
        """The character's greetings as (number, text), expanded for the caller's persona (the
        first message is number 0, alternates from 1; empty ones left out)."""
        path = f"/api/characters/{quote(character_id, safe='')}/greetings"
        if persona_id:
            path += f"?user_persona_id={quote(persona_id, safe='')}"
        data = await self._read(path, caller)
        try:
            return [(int(g["index"]), str(g["text"])) for g in data["greetings"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PeerUnavailable("characters", "sent malformed greetings") from exc

    async def _read(self, path: str, caller: Identity | None = None) -> Any:
        try:
            return await self.peer.get(path, headers=caller.forward_headers if caller else None)
        except PeerRejected as exc:
            if exc.status_code == 404:
                raise  # its own 404 (character_not_found, persona_not_found), relayed as is
            raise PeerUnavailable("characters", f"refused the request: {exc.message}") from exc

    async def _fetch(self, character_id: str) -> tuple[CharacterProfile, float]:
        data = await self._read(f"/api/characters/{quote(character_id, safe='')}")
        try:
            # In a worker thread: its lorebook's keys are compiled there (`prepared`), not
            # on the event loop nor within a turn's scan deadline.
            card = await asyncio.to_thread(_card, data)
            profile = CharacterProfile(data["id"], card, data.get("voice_id"))
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise PeerUnavailable("characters", "sent a malformed character") from exc
        return profile, self.ttl_s


def _card(data: dict[str, Any]) -> CharacterCard:
    """The prompt fields of a character as the characters service sends it (a field it does
    not send is empty)."""
    texts = {
        field: str(data.get(source) or "")
        for field, source in (
            ("name", "name"),
            ("nickname", "nickname"),
            ("personality", "personality"),
            ("scenario", "scenario"),
            ("examples", "sample_dialogue"),
            ("system_prompt", "system_prompt"),
            ("post_history_instructions", "post_history_instructions"),
        )
    }
    book, generation = data.get("lorebook"), data.get("generation")
    return CharacterCard(
        description=str(data["persona"]),
        # Checked whole by characters when it was written: read as checked (a key refused
        # since is never compiled), its matchers made once for as long as it is cached.
        lorebook=(
            Lorebook.model_validate(book, context=STORED).for_prompt().prepared() if book else None
        ),
        generation=_generation(generation) if generation else None,
        **texts,
    )


def _generation(defaults: dict[str, Any]) -> GenerationDefaults:
    """A character's generation defaults, those this version knows (a newer characters
    service may send more)."""
    known = {k: v for k, v in defaults.items() if k in GenerationDefaults.model_fields}
    return GenerationDefaults.model_validate(known)
