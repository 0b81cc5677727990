"""User personas: the caller's own, read and written by their owner only."""

from redis.asyncio import Redis

from avatar_characters.personas.schemas import Persona, PersonaFields, PersonaPage
from avatar_characters.personas.store import PersonaStore
from avatar_characters.settings import CharactersSettings
from avatar_shared.adoption import KindMoved
from avatar_shared.owned import Owner, PageKey
from avatar_shared.pages import TIME_AND_ID


class PersonaService:
    def __init__(self, settings: CharactersSettings, redis: Redis) -> None:
        self.store = PersonaStore(redis, settings)

    async def list(self, user_id: str, after: PageKey | None, limit: int) -> PersonaPage:
        page = await self.store.page(user_id, after, limit)
        personas = [Persona.model_validate(p) for p in page.items]
        return PersonaPage(personas=personas, next_cursor=TIME_AND_ID.next_of(page))

    async def get(self, persona_id: str, user_id: str) -> Persona:
        return Persona.model_validate(await self.store.get(persona_id, user_id))

    async def get_default(self, user_id: str) -> Persona | None:
        found = await self.store.get_default(user_id)
        return None if found is None else Persona.model_validate(found)

    async def create(self, owner: Owner, fields: PersonaFields) -> Persona:
        created = await self.store.create(
            owner, fields.name, fields.description, bool(fields.is_default)
        )
        return Persona.model_validate(created)

    async def replace(self, persona_id: str, owner: Owner, fields: PersonaFields) -> Persona:
        replaced = await self.store.replace(
            persona_id, owner, fields.name, fields.description, fields.is_default
        )
        return Persona.model_validate(replaced)

    async def delete(self, persona_id: str, owner: Owner) -> None:
        await self.store.delete(persona_id, owner)

    async def adopt(self, from_id: str, to_id: str) -> KindMoved:
        """At sign-in: the anonymous user's personas (and default) become the account's."""
        return await self.store.adopt(from_id, to_id)
