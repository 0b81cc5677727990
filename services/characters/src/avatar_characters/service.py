"""The characters domain: presets and user characters behind one set of operations."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis

from avatar_characters.cards import (
    V2,
    V3,
    ImportedCard,
    book_digest,
    export_card,
    import_card,
    read_card,
)
from avatar_characters.errors import (
    CharacterNotFound,
    CharacterTooLarge,
    ImportTooLarge,
    LorebookTestsBusy,
    PresetReadOnly,
)
from avatar_characters.listing import ListQuery, stored_page
from avatar_characters.peers.tts import VoiceDirectory
from avatar_characters.png import PNG_SIGNATURE, placeholder_png, png_with_cards
from avatar_characters.presets import PresetCatalog
from avatar_characters.schemas import (
    CARD_ONLY_FIELDS,
    READ_ONLY_FIELDS,
    Character,
    CharacterFields,
    CharacterPage,
    CharacterPatch,
    Greetings,
    LorebookTestBody,
    LorebookTestResult,
    ShownGreeting,
    empty_book,
)
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore, PageKey
from avatar_shared.adoption import KindMoved
from avatar_shared.errors import ValidationFailed, describe_errors
from avatar_shared.gate import Gate
from avatar_shared.json_types import strict_json
from avatar_shared.lorebook import STORED, Activation, Lorebook, activate
from avatar_shared.macros import Macros
from avatar_shared.owned import Owner
from avatar_shared.rate import RateLimit
from avatar_shared.timestamps import utc_now
from avatar_shared.token_estimate import default_tokens

IfMatch = frozenset[str] | None  # the versions an If-Match names; None: any

# Lorebook tests running at once in this replica; more wait up to LORE_TEST_WAIT_S, then 503.
# A test's cost grows with the book and the text scanned: a 500-entry book of 64 keys each
# over 101 messages of 8000 characters takes about 20 s of CPU here, so a few callers within
# their rate must not take every core.
LORE_TESTS_IN_FLIGHT, LORE_TEST_WAIT_S = 2, 5.0


class CharacterService:
    def __init__(
        self,
        settings: CharactersSettings,
        redis: Redis,
        http: httpx.AsyncClient,
        presets: PresetCatalog,
    ) -> None:
        self.presets = presets
        self.store = CharacterStore(redis, settings)
        self.max_card_json_bytes = settings.max_card_json_bytes
        self.writes = RateLimit(
            redis,
            "character-writes",
            settings.character_writes_per_min,
            60,
            "character writes",
            "a minute",
        )
        # A lorebook test is a read, but one that costs CPU in proportion to the book and the
        # messages sent (regex keys included): counted like writes, on a rate of its own.
        self.lore_tests = RateLimit(
            redis, "lorebook-tests", settings.lore_tests_per_min, 60, "lorebook tests", "a minute"
        )
        self.lore_test_slots = Gate(LORE_TESTS_IN_FLIGHT, LORE_TEST_WAIT_S, LorebookTestsBusy)
        self.default_user_name = settings.default_user_name
        self.lore_scan_depth = settings.lore_scan_depth
        self.lore_test_token_budget = settings.lore_test_token_budget
        self.voices = VoiceDirectory(http, settings.tts_url, settings.voices_cache_s)
        self.images_dir = Path(settings.images_dir) if settings.images_dir else None

    def list_presets(self, listing: ListQuery, after: int | None) -> CharacterPage:
        return listing.presets_page(self.presets.all(), after)

    async def list_own(
        self, user_id: str, listing: ListQuery, after: PageKey | None
    ) -> CharacterPage:
        def select(record: dict[str, Any]) -> Character | None:
            character = Character.model_validate(record, context=STORED)
            return character if listing.keeps(character) else None

        await self.store.renew(user_id)
        return stored_page(await self.store.page_owned(user_id, after, listing.limit, select))

    async def get(self, character_id: str) -> Character:
        return (await self.get_versioned(character_id))[0]

    async def get_versioned(self, character_id: str) -> tuple[Character, str | None]:
        """The character and its version (its ETag; None for a preset, which no one writes)."""
        preset = self.presets.get(character_id)  # the hot path: no Redis, no copying
        if preset is not None:
            return preset, None
        stored, version = await self._user_character(character_id)
        return Character.model_validate(stored, context=STORED), version

    async def get_with_card(self, character_id: str) -> dict[str, Any]:
        """The full record, with the raw card a user character was imported from."""
        preset = self.presets.get(character_id)
        if preset is not None:
            return preset.model_dump()
        stored, _ = await self._user_character(character_id)
        # Characters imported before cards had their own key keep theirs in the record.
        return {**stored, "card": await self.store.card(character_id) or stored.get("card")}

    async def _user_character(self, character_id: str) -> tuple[dict[str, Any], str]:
        found = await self.store.get_versioned(character_id)
        if found is None:
            raise CharacterNotFound(character_id)
        await self.store.renew(found[0]["owner"])  # in use (a chat reads it): kept
        return found

    async def create(self, owner: Owner, fields: CharacterFields) -> Character:
        await self.voices.check(fields.voice_id)
        record = fields.model_dump()
        self._check_size(record)
        created = await self.store.create(owner, record)
        return Character.model_validate(created, context=STORED)

    # The writes below take `if_match`, the versions the caller read (If-Match; None: any),
    # and answer the character with its new version.

    async def replace(
        self, character_id: str, owner: Owner, fields: CharacterFields, if_match: IfMatch = None
    ) -> tuple[Character, str]:
        # The card's prompt fields are not in API.md's character object: a frontend's PUT
        # leaves them out and keeps them (sent, they are replaced, as every other field).
        keep = {f for f in CARD_ONLY_FIELDS if f not in fields.model_fields_set}
        changes = fields.model_dump(exclude=keep | READ_ONLY_FIELDS)
        return await self._update(character_id, owner, changes, if_match)

    async def patch(
        self, character_id: str, owner: Owner, patch: CharacterPatch, if_match: IfMatch = None
    ) -> tuple[Character, str]:
        changes = patch.model_dump(exclude_unset=True, exclude=READ_ONLY_FIELDS)
        return await self._update(character_id, owner, changes, if_match)

    async def lorebook(self, character_id: str) -> tuple[Lorebook, str | None]:
        """The character's lorebook, or an empty one, and the character's version."""
        character, version = await self.get_versioned(character_id)
        return character.lorebook or empty_book(), version

    async def replace_lorebook(
        self, character_id: str, owner: Owner, book: Lorebook, if_match: IfMatch = None
    ) -> tuple[Lorebook, str]:
        changed, version = await self._update(character_id, owner, {"lorebook": book}, if_match)
        return changed.lorebook or empty_book(), version

    def greetings(self, character: Character, user_name: str | None) -> Greetings:
        """The character's greeting, then its alternates, expanded for a user called
        `user_name` (None: DEFAULT_USER_NAME); the stored fields stay as they are."""
        macros = Macros(
            char=character.nickname or character.name, user=user_name or self.default_user_name
        )
        texts = [character.first_message, *character.alternate_greetings]
        shown = [
            ShownGreeting(index=i, text=macros.expand(text))
            for i, text in enumerate(texts)
            if text.strip()
        ]
        return Greetings(greetings=shown)

    async def test_lorebook(self, character_id: str, body: LorebookTestBody) -> LorebookTestResult:
        """Which entries of the character's lorebook `body.messages` would activate, and
        why the others that matched were left out; nothing is stored, no LLM is called."""
        character = await self.get(character_id)
        book = character.lorebook
        if book is None or not book.entries:
            return LorebookTestResult(fired=[], left_out=[])
        # Keys' {{char}} and {{user}} as chat fills them for a user without a persona.
        names = Macros(char=character.nickname or character.name, user=self.default_user_name)
        # The request's values win over the book's (activate lets the book's win over ours).
        tried = {"scan_depth": body.scan_depth, "token_budget": body.token_budget}
        if overrides := {k: v for k, v in tried.items() if v is not None}:
            book = book.model_copy(update=overrides)
        texts = [m.content for m in body.messages]
        # In a worker thread: a large book with regex keys may take a while, and the event
        # loop keeps serving the other requests meanwhile.
        async with self.lore_test_slots.slot():
            activation = await asyncio.to_thread(
                activate,
                book,
                texts,
                self.lore_scan_depth,
                self.lore_test_token_budget,
                default_tokens,
                names.expand,
            )
        return _lore_result(activation)

    async def _update(
        self, character_id: str, owner: Owner, changes: dict[str, Any], if_match: IfMatch
    ) -> tuple[Character, str]:
        if self.presets.get(character_id) is not None:
            raise PresetReadOnly()
        if "voice_id" in changes:
            await self.voices.check(changes["voice_id"])
        card = await self.store.card(character_id)  # never changes after the import

        def with_card(record: dict[str, Any]) -> dict[str, Any]:
            # As it is exported: the record alone lacks the card, kept apart.
            return {**record, "card": card} if card else record

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            # (A record from before a field existed leaves it out: its default.)
            editable = {f: current[f] for f in CharacterFields.model_fields if f in current}
            # The result is validated whole, so PATCH obeys the same limits as POST; books
            # are not checked again (the stored one was when written, a changed one as sent).
            try:
                merged = CharacterFields.model_validate({**editable, **changes}, context=STORED)
            except ValidationError as exc:
                raise ValidationFailed(describe_errors(exc.errors())) from exc
            fields = merged.model_dump()
            self._check_size(with_card({**current, **fields}), with_card(current))
            return fields

        updated = await self.store.update(character_id, owner, apply, if_match)
        return Character.model_validate(updated, context=STORED), self.store.version(updated)

    def _check_size(self, record: dict[str, Any], before: dict[str, Any] | None = None) -> None:
        """A character is at most what an import takes, measured as its export (the card
        JSON it would be imported back from), so that every character can make the round
        trip. Its lorebook's `extensions` take any JSON: without this, megabytes. One stored
        larger before this check may still change in ways that do not make it larger."""
        size = _card_size(record)
        if size > self.max_card_json_bytes and (before is None or size > _card_size(before)):
            raise CharacterTooLarge(size, self.max_card_json_bytes)

    async def delete(self, character_id: str, owner: Owner, if_match: IfMatch = None) -> None:
        if self.presets.get(character_id) is not None:
            raise PresetReadOnly()
        await self.store.delete(character_id, owner, if_match)

    async def adopt(self, from_id: str, to_id: str) -> KindMoved:
        """At sign-in: the anonymous user's characters become the account's (their ids stay,
        so chats and links to them go on)."""
        return await self.store.adopt(from_id, to_id)

    async def import_card(self, owner: Owner, raw: bytes) -> Character:
        # In a worker thread: a book of 2,000 regex keys takes a second or two to compile, and
        # the event loop keeps serving the other requests meanwhile.
        imported = await asyncio.to_thread(_imported, raw, self.max_card_json_bytes)
        # The book is checked already (pydantic runs its validator again on a model it is
        # given): its keys are not compiled a second time.
        fields = CharacterFields.model_validate(imported.fields, context=STORED)
        # What the card's fields became here (after trimming), so that the export can tell
        # which ones the user has changed since.
        as_imported = fields.model_dump(include=set(imported.fields))
        # The book is kept in the record and in the card already: a digest tells the change.
        as_imported["lorebook"] = book_digest(as_imported["lorebook"])
        record = {**fields.model_dump(), "imported_fields": as_imported}
        # Its export, not the card alone, is what is measured: the fields the specs require
        # are added to every entry of its book, so a card just under MAX_CARD_JSON_BYTES can
        # export over it, and such a character could be neither edited nor imported back.
        # (updated_at: the modification date the export writes, its length any time's.)
        size = _card_size({**record, "card": imported.card, "updated_at": utc_now()})
        if size > self.max_card_json_bytes:
            raise ImportTooLarge(size, self.max_card_json_bytes)
        created = await self.store.create(owner, record, imported.card)
        return Character.model_validate(created, context=STORED)

    async def export(self, character_id: str, as_png: bool) -> bytes:
        character = await self.get_with_card(character_id)
        if not as_png:
            return strict_json(export_card(character, V3), ensure_ascii=False).encode()
        portrait = self._portrait(character.get("image_url")) or placeholder_png(character_id)
        cards = {"chara": export_card(character, V2), "ccv3": export_card(character, V3)}
        return png_with_cards(portrait, cards)

    def _portrait(self, image_url: str | None) -> bytes | None:
        """The character's own image when it is a local PNG under IMAGES_DIR."""
        if not (self.images_dir and image_url and image_url.startswith("/images/")):
            return None
        try:
            path = (self.images_dir / image_url.removeprefix("/images/")).resolve()
        except ValueError:  # a NUL, in an image_url stored before they were refused
            return None
        if not path.is_relative_to(self.images_dir.resolve()) or not path.is_file():
            return None
        data = path.read_bytes()
        return data if data.startswith(PNG_SIGNATURE) else None


def _imported(raw: bytes, max_card_json_bytes: int) -> ImportedCard:
    return import_card(read_card(raw, max_card_json_bytes))


def _card_size(record: dict[str, Any]) -> int:
    # (A lone surrogate is counted, not refused here: storing it is 422, saying so.)
    card = strict_json(export_card(record, V3), ensure_ascii=False)
    return len(card.encode(errors="surrogatepass"))


def _lore_result(activation: Activation) -> LorebookTestResult:
    fired, left_out = activation.report()
    return LorebookTestResult(fired=fired, left_out=left_out)
