"""User personas in Redis: owned records (avatar_shared.owned, the same piece and quotas user
characters are kept with) under the `personas` namespace, and each user's default.

Keys:
- `personas:item:{id}`: a persona as JSON (name, description, owner, times);
- `personas:owner:{user_id}`: the user's persona ids scored by creation time, newest first;
- `personas:bytes:{user_id}`: the bytes the user's personas take;
- `personas:default:{user_id}`: the id of the user's default persona, if they chose one;
- and, for anonymous users, the keys of avatar_shared.owned that count them per client address and
  renew what they keep (the default key expires with their personas).

A persona's `is_default` is read from that one key, never stored in the persona: making one
the default is a single SET, so at most one is the default whatever writes race, and no other
persona has to be rewritten. The key is set only while the persona exists (a script checks)
and deleted with it (and expires with it), so it never outlives it. A user's keys are bounded
by the quotas (MAX_PERSONAS_PER_USER records, MAX_PERSONA_BYTES_PER_USER bytes; less for an
anonymous user) and a few more. At sign-in an anonymous user's personas, and their default,
move to the account (`adopt`).
"""

import json
from typing import Any

from redis.asyncio import Redis

from avatar_characters.personas.errors import PersonaNotFound, PersonaQuotaExceeded
from avatar_characters.personas.schemas import ID_PREFIX
from avatar_characters.settings import CharactersSettings
from avatar_shared.adoption import KindMoved
from avatar_shared.budget import Budget
from avatar_shared.owned import Kind, OwnedRecords, Owner, PageKey, Quota, Quotas
from avatar_shared.pages import Page

# KEYS: the persona's item, the owner's default. ARGV: its id. Only while it exists, and
# expiring when it does (an anonymous user's).
SET_DEFAULT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
"""
# KEYS: the owner's default. ARGV: the persona's id. Only if it is the default.
CLEAR_DEFAULT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""
# At sign-in, once the anonymous user's personas moved (OwnedRecords.adopt). KEYS: the
# anonymous user's default, the account's default, the account's persona ids. Their default,
# if it moved, becomes the account's unless the account chose one (kept until deleted, as the
# account's personas are); it is no longer theirs either way.
ADOPT_DEFAULT = """
local chosen = redis.call('GET', KEYS[1])
if chosen and redis.call('ZSCORE', KEYS[3], chosen) then
  redis.call('SET', KEYS[2], chosen, 'NX')
  redis.call('DEL', KEYS[1])
end
"""

PERSONAS = Kind(
    namespace="personas",
    id_prefix=ID_PREFIX,
    not_found=PersonaNotFound,
    not_owner=PersonaNotFound,  # not confirmed to others: the same 404 as a missing one
    extra_keys=("default",),
)


def default_key(user_id: str) -> str:
    return f"personas:default:{user_id}"


class PersonaStore:
    def __init__(self, redis: Redis, settings: CharactersSettings) -> None:
        self.redis = redis
        quotas = Quotas(
            signed_in=Quota(settings.max_personas_per_user, settings.max_persona_bytes_per_user),
            anonymous=Quota(
                settings.max_personas_per_anonymous_user,
                settings.max_persona_bytes_per_anonymous_user,
            ),
            address=Quota(
                settings.max_personas_per_address, settings.max_persona_bytes_per_address
            ),
            noun="personas",
            error=PersonaQuotaExceeded,
        )
        budget = Budget(redis, "personas", settings.redis_maxmemory_bytes)
        self.records = OwnedRecords(redis, PERSONAS, quotas, budget, settings.anon_data_ttl_s)
        self._set_default = redis.register_script(SET_DEFAULT)
        self._clear_default = redis.register_script(CLEAR_DEFAULT)
        self._adopt_default = redis.register_script(ADOPT_DEFAULT)

    async def create(
        self, owner: Owner, name: str, description: str, is_default: bool
    ) -> dict[str, Any]:
        persona = await self.records.create(owner, {"name": name, "description": description})
        if is_default:
            await self._choose(persona["id"], owner.user_id, True)
        return {**persona, "is_default": is_default}

    async def get(self, persona_id: str, user_id: str) -> dict[str, Any]:
        """The caller's persona; PersonaNotFound when it is not there or not theirs."""
        raw, default = await self.redis.mget(
            [self.records.item_key(persona_id), default_key(user_id)]
        )
        persona = self.records.owned_by(json.loads(raw) if raw else None, persona_id, user_id)
        await self.records.renew(user_id)
        return {**persona, "is_default": default == persona_id}

    async def get_default(self, user_id: str) -> dict[str, Any] | None:
        """The user's default persona, or None when they chose none."""
        persona_id = await self.redis.get(default_key(user_id))
        if persona_id is None:
            return None
        try:
            return await self.get(persona_id, user_id)
        except PersonaNotFound:  # deleted between the two reads: it is no longer the default
            return None

    async def replace(
        self, persona_id: str, owner: Owner, name: str, description: str, is_default: bool | None
    ) -> dict[str, Any]:
        """New name and description; the default chosen or given up when `is_default` says,
        else left as it is."""
        user_id = owner.user_id
        persona = await self.records.update(
            persona_id, owner, lambda _: {"name": name, "description": description}
        )
        if is_default is None:
            is_default = await self.redis.get(default_key(user_id)) == persona_id
        else:
            await self._choose(persona_id, user_id, is_default)
        return {**persona, "is_default": is_default}

    async def _choose(self, persona_id: str, user_id: str, is_default: bool) -> None:
        if is_default:
            keys = [self.records.item_key(persona_id), default_key(user_id)]
            await self._set_default(keys=keys, args=[persona_id])
        else:
            await self._clear_default(keys=[default_key(user_id)], args=[persona_id])

    async def delete(self, persona_id: str, owner: Owner) -> None:
        await self.records.delete(persona_id, owner)
        await self._choose(persona_id, owner.user_id, False)

    async def adopt(self, from_id: str, to_id: str) -> KindMoved:
        """The anonymous user's personas become the account's, as far as its quotas allow,
        and their default with them (see ADOPT_DEFAULT)."""
        moved = await self.records.adopt(from_id, to_id)
        keys = [default_key(from_id), default_key(to_id), self.records.owner_key(to_id)]
        await self._adopt_default(keys=keys)
        return moved

    async def page(
        self, user_id: str, after: PageKey | None, limit: int
    ) -> Page[dict[str, Any], PageKey]:
        """A page of the user's personas, newest first, from just after `after`."""
        default = await self.redis.get(default_key(user_id))
        await self.records.renew(user_id)
        return await self.records.page_owned(
            user_id, after, limit, lambda p: {**p, "is_default": p["id"] == default}
        )
