"""The characters domain: presets and user characters behind one set of operations."""

import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis

from avatar_characters.cards import V2, V3, book_digest, export_card, import_card, read_card
from avatar_characters.errors import CharacterNotFound, PresetReadOnly
from avatar_characters.listing import ListQuery, stored_page
from avatar_characters.peers.tts import VoiceDirectory
from avatar_characters.png import PNG_SIGNATURE, placeholder_png, png_with_cards
from avatar_characters.presets import PresetCatalog
from avatar_characters.schemas import (
    CARD_ONLY_FIELDS,
    Character,
    CharacterFields,
    CharacterPage,
    CharacterPatch,
    empty_book,
)
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore, PageKey
from avatar_shared.errors import ValidationFailed, describe_errors
from avatar_shared.lorebook import Lorebook
from avatar_shared.rate import RateLimit


class CharacterService:
    def __init__(
        self,
        settings: CharactersSettings,
        redis: Redis,
        http: httpx.AsyncClient,
        presets: PresetCatalog,
    ) -> None:
        self.presets = presets
        self.store = CharacterStore(
            redis, settings.max_characters_per_user, settings.max_character_bytes_per_user
        )
        self.writes = RateLimit(
            redis,
            "character-writes",
            settings.character_writes_per_min,
            60,
            "character writes",
            "a minute",
        )
        self.voices = VoiceDirectory(http, settings.tts_url, settings.voices_cache_s)
        self.images_dir = Path(settings.images_dir) if settings.images_dir else None

    def list_presets(self, listing: ListQuery, after: int | None) -> CharacterPage:
        return listing.presets_page(self.presets.all(), after)

    async def list_own(
        self, user_id: str, listing: ListQuery, after: PageKey | None
    ) -> CharacterPage:
        def select(record: dict[str, Any]) -> Character | None:
            character = Character.model_validate(record)
            return character if listing.keeps(character) else None

        return stored_page(await self.store.page_owned(user_id, after, listing.limit, select))

    async def get(self, character_id: str) -> Character:
        preset = self.presets.get(character_id)  # the hot path: no Redis, no copying
        if preset is not None:
            return preset
        return Character.model_validate(await self._user_character(character_id))

    async def get_with_card(self, character_id: str) -> dict[str, Any]:
        """The full record, with the raw card a user character was imported from."""
        preset = self.presets.get(character_id)
        if preset is not None:
            return preset.model_dump()
        stored = await self._user_character(character_id)
        # Characters imported before cards had their own key keep theirs in the record.
        return {**stored, "card": await self.store.card(character_id) or stored.get("card")}

    async def _user_character(self, character_id: str) -> dict[str, Any]:
        stored = await self.store.get(character_id)
        if stored is None:
            raise CharacterNotFound(character_id)
        return stored

    async def create(self, user_id: str, fields: CharacterFields) -> Character:
        await self.voices.check(fields.voice_id)
        return Character.model_validate(await self.store.create(user_id, fields.model_dump()))

    async def replace(self, character_id: str, user_id: str, fields: CharacterFields) -> Character:
        # The card's prompt fields are not in API.md's character object: a frontend's PUT
        # leaves them out and keeps them (sent, they are replaced, as every other field).
        keep = {f for f in CARD_ONLY_FIELDS if f not in fields.model_fields_set}
        return await self._update(character_id, user_id, fields.model_dump(exclude=keep))

    async def patch(self, character_id: str, user_id: str, patch: CharacterPatch) -> Character:
        return await self._update(character_id, user_id, patch.model_dump(exclude_unset=True))

    async def lorebook(self, character_id: str) -> Lorebook:
        """The character's lorebook, or an empty one."""
        return (await self.get(character_id)).lorebook or empty_book()

    async def replace_lorebook(self, character_id: str, user_id: str, book: Lorebook) -> Lorebook:
        changed = await self._update(character_id, user_id, {"lorebook": book})
        return changed.lorebook or empty_book()

    async def _update(self, character_id: str, user_id: str, changes: dict[str, Any]) -> Character:
        if self.presets.get(character_id) is not None:
            raise PresetReadOnly()
        if "voice_id" in changes:
            await self.voices.check(changes["voice_id"])

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            # (A record from before a field existed leaves it out: its default.)
            editable = {f: current[f] for f in CharacterFields.model_fields if f in current}
            try:  # the result is validated whole, so PATCH obeys the same limits as POST
                merged = CharacterFields.model_validate({**editable, **changes})
            except ValidationError as exc:
                raise ValidationFailed(describe_errors(exc.errors())) from exc
            return merged.model_dump()

        return Character.model_validate(await self.store.update(character_id, user_id, apply))

    async def delete(self, character_id: str, user_id: str) -> None:
        if self.presets.get(character_id) is not None:
            raise PresetReadOnly()
        await self.store.delete(character_id, user_id)

    async def import_card(self, user_id: str, raw: bytes) -> Character:
        imported = import_card(read_card(raw))
        fields = CharacterFields.model_validate(imported.fields)
        # What the card's fields became here (after trimming), so that the export can tell
        # which ones the user has changed since.
        as_imported = fields.model_dump(include=set(imported.fields))
        # The book is kept in the record and in the card already: a digest tells the change.
        as_imported["lorebook"] = book_digest(as_imported["lorebook"])
        record = {**fields.model_dump(), "imported_fields": as_imported}
        return Character.model_validate(await self.store.create(user_id, record, imported.card))

    async def export(self, character_id: str, as_png: bool) -> bytes:
        character = await self.get_with_card(character_id)
        if not as_png:
            return json.dumps(export_card(character, V3), ensure_ascii=False).encode()
        portrait = self._portrait(character.get("image_url")) or placeholder_png(character_id)
        cards = {"chara": export_card(character, V2), "ccv3": export_card(character, V3)}
        return png_with_cards(portrait, cards)

    def _portrait(self, image_url: str | None) -> bytes | None:
        """The character's own image when it is a local PNG under IMAGES_DIR."""
        if not (self.images_dir and image_url and image_url.startswith("/images/")):
            return None
        path = (self.images_dir / image_url.removeprefix("/images/")).resolve()
        if not path.is_relative_to(self.images_dir.resolve()) or not path.is_file():
            return None
        data = path.read_bytes()
        return data if data.startswith(PNG_SIGNATURE) else None
