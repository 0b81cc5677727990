"""User-made characters in Redis, owned by the characters service: owned records
(avatar_shared.owned) under the `characters` namespace, with their count and byte quotas.

Keys:
- `characters:item:{id}`: a character as JSON, without its raw Character Card, so reading one
  (chat's persona fetch) or a page of them stays small;
- `characters:card:{id}`: the raw card it was imported from, read only on export;
- `characters:owner:{user_id}`: the user's character ids scored by creation time (Unix
  seconds), so a listing is pages of this set, newest first;
- `characters:bytes:{user_id}`: the bytes the user's characters and cards take;
- and, for anonymous users, the keys of avatar_shared.owned that count them per client address and
  renew what they keep.
"""

from typing import Any

from redis.asyncio import Redis

from avatar_characters.errors import CharacterNotFound, NotYourCharacter, QuotaExceeded
from avatar_characters.settings import CharactersSettings
from avatar_shared.budget import Budget
from avatar_shared.changes import CHARACTERS_CHANGED
from avatar_shared.owned import Kind, OwnedRecords, Owner, Quota, Quotas
from avatar_shared.owned import PageKey as PageKey  # re-exported: listing, deps

USER_ID_PREFIX = "usr_"  # presets may not use it, so the two kinds of id never collide

CHARACTERS = Kind(
    namespace="characters",
    id_prefix=USER_ID_PREFIX,
    not_found=CharacterNotFound,
    not_owner=lambda _: NotYourCharacter(),
    attachment="card",
    changes=CHARACTERS_CHANGED,  # chat caches characters: it drops one that changed
)


class CharacterStore(OwnedRecords):
    def __init__(self, redis: Redis, settings: CharactersSettings) -> None:
        quotas = Quotas(
            signed_in=Quota(
                settings.max_characters_per_user, settings.max_character_bytes_per_user
            ),
            anonymous=Quota(
                settings.max_characters_per_anonymous_user,
                settings.max_character_bytes_per_anonymous_user,
            ),
            address=Quota(
                settings.max_characters_per_address, settings.max_character_bytes_per_address
            ),
            noun="characters",
            error=QuotaExceeded,
        )
        budget = Budget(redis, "characters", settings.redis_maxmemory_bytes)
        super().__init__(redis, CHARACTERS, quotas, budget, settings.anon_data_ttl_s)

    async def create(
        self, owner: Owner, fields: dict[str, Any], card: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await super().create(owner, {**fields, "is_preset": False}, card)

    async def card(self, character_id: str) -> dict[str, Any] | None:
        """The raw card a character was imported from, if it was."""
        return await self.attachment_of(character_id)
