"""Character Card V2 and V3 (the role-play ecosystem's exchange format), as JSON or in PNG;
a V1 card (its fields at the top level, no `spec`) is read as a V2 one.

Specs: character-card-spec-v2 (`spec: chara_card_v2`, the card as base64 JSON in a PNG tEXt
chunk named `chara`) and character-card-spec-v3 (`spec: chara_card_v3`, chunk `ccv3`; a V3
reader prefers `ccv3` when both are present). Pure functions: bytes in, bytes or dicts out.
"""

import base64
import binascii
import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from avatar_characters.errors import BadCard, CardTooLarge
from avatar_characters.png import PNG_SIGNATURE, check_dimensions, chunks_of, text_chunks
from avatar_characters.schemas import (
    MAX_GREETINGS,
    MAX_PROMPT_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    max_length,
)
from avatar_shared.errors import describe_errors
from avatar_shared.json_types import SOME_TEXT, check_json_shape
from avatar_shared.lorebook import MAX_CONTENT_CHARS, MAX_NAME_CHARS, Lorebook, LoreEntry

MAX_CARD_BYTES = 10 * 1024 * 1024  # the file: a PNG's picture and its card
# Fields of the V2/V3 specs that other code walks, with the JSON type each must have.
LIST_FIELDS = ("tags", "alternate_greetings", "group_only_greetings")
V2, V3 = "chara_card_v2", "chara_card_v3"


_TEXT = {"type": ["string", "null"]}
_LIST = {"type": ["array", "null"]}
_SOME_TEXT = {"type": "string", "pattern": SOME_TEXT}
LOREBOOK_REF = "#/components/schemas/Lorebook"  # the lorebook routes put it in the document
# Card fields that become one of our text fields, cut to its limit (the card keeps them whole).
CUT_FIELDS = {
    "creator_notes": "description",
    "mes_example": "sample_dialogue",
    "scenario": "scenario",
    "first_mes": "first_message",
    "personality": "personality",
    "system_prompt": "system_prompt",
    "post_history_instructions": "post_history_instructions",
    "nickname": "nickname",
}
# What `read_card` accepts as JSON, for the OpenAPI document. (Two rules it cannot say: a card
# without a description has its personality as the persona; nesting is at most MAX_JSON_DEPTH
# levels.) Fields beyond these are kept whole for export.
CARD_SCHEMA = {
    "type": "object",
    "description": "A Character Card V2 or V3 (character-card-spec-v2/v3). Its description "
    "becomes the persona (its first 8000 characters; the personality when it has no "
    "description); personality, scenario, first_mes, alternate_greetings, mes_example, "
    "system_prompt, post_history_instructions and V3's nickname become the fields of the same "
    "meaning (longer texts are cut to their limits, the card keeps them whole for export), and "
    "character_book the lorebook (its texts over the Lorebook schema's lengths are cut; refused "
    "when it breaks the schema otherwise). A V1 card (name, description, personality, "
    "scenario, first_mes and mes_example at the top level, no spec) is read as a V2 card "
    "whose data it is.",
    "required": ["spec", "data"],
    "properties": {
        "spec": {"enum": [V2, V3]},
        "data": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {**_SOME_TEXT, "maxLength": max_length("name")},
                "description": _TEXT,
                **{key: _TEXT for key in CUT_FIELDS},
                **{key: _LIST for key in LIST_FIELDS},
                "extensions": {"type": ["object", "null"]},
                "character_book": {
                    "anyOf": [
                        {"allOf": [{"$ref": LOREBOOK_REF}], "required": ["entries"]},
                        {"type": "null"},
                    ]
                },
            },
            "anyOf": [
                {"required": ["description"], "properties": {"description": _SOME_TEXT}},
                {"required": ["personality"], "properties": {"personality": _SOME_TEXT}},
            ],
        },
    },
}


@dataclass(frozen=True)
class ImportedCard:
    fields: dict[str, Any]  # our editable fields, ready for CharacterIn
    card: dict[str, Any]  # the whole card as received, kept for a lossless export


# --- reading a card -----------------------------------------------------------------------


def card_from_png(png: bytes, max_json_bytes: int) -> dict[str, Any]:
    chunks = chunks_of(png)
    check_dimensions(chunks)
    texts = text_chunks(chunks)
    encoded = texts.get("ccv3") or texts.get("chara")
    if encoded is None:
        raise BadCard("The PNG image carries no character card (no 'chara' or 'ccv3' chunk).")
    try:
        raw = base64.b64decode(_as_strict_base64(encoded), validate=True)
    except binascii.Error as exc:
        raise BadCard("The card chunk is not valid base64-encoded JSON.") from exc
    _check_size(raw, max_json_bytes)
    try:
        return _as_object(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise BadCard("The card chunk is not valid base64-encoded JSON.") from exc


def _as_strict_base64(text: bytes) -> bytes:
    """Other readers (SillyTavern's, Node's Buffer.from) skip line breaks and take base64
    without its `=` padding: so do we, and nothing else is let through."""
    bare = b"".join(text.split())  # ASCII white space: MIME encoders break lines
    return bare + b"=" * (-len(bare) % 4)


def card_from_json(raw: bytes, max_json_bytes: int) -> dict[str, Any]:
    _check_size(raw, max_json_bytes)
    try:
        return _as_object(json.loads(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadCard("The file is neither a PNG image nor a valid JSON card.") from exc


def _as_object(card: object) -> dict[str, Any]:
    if not isinstance(card, dict):
        raise BadCard("The card is not a JSON object.")
    _check_shape(card)
    card = _v2_of_v1(card)
    _check_types(card.get("data"))
    return card


def _v2_of_v1(card: dict[str, Any]) -> dict[str, Any]:
    """A Character Card V1 (spec_v1.md: name, description, personality, scenario, first_mes
    and mes_example at the top level, no `spec`) as a V2 card with those fields, and whatever
    else it carries, in its data: SillyTavern imports one (its v1 branch), and so it exports."""
    if "spec" in card or "data" in card or "name" not in card:
        return card
    return {"spec": V2, "spec_version": "2.0", "data": card}


def _check_shape(card: dict[str, Any]) -> None:
    try:
        check_json_shape(card, "The card", on_text=_check_text)
    except ValueError as exc:
        raise BadCard(f"{exc}.") from exc


def _check_text(text: str) -> None:
    """JSON may escape half of a UTF-16 pair alone (`\\ud800`); no UTF-8 text holds one, so
    such a card could be neither validated nor stored."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise BadCard(
            "The card has text that is not Unicode: a lone UTF-16 surrogate "
            f"({text[exc.start]!r} at character {exc.start})."
        ) from exc


def _check_types(data: object) -> None:
    if not isinstance(data, dict):
        return  # import_card says what is missing
    for key in LIST_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], list):
            raise BadCard(f"The card's '{key}' is not a list.")
    if data.get("extensions") is not None and not isinstance(data["extensions"], dict):
        raise BadCard("The card's 'extensions' is not an object.")
    book = data.get("character_book")
    if book is None:
        return
    entries = book.get("entries") if isinstance(book, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadCard("The card's 'character_book' needs 'entries', a list of objects.")


def _check_size(card_json: bytes, max_json_bytes: int) -> None:
    """The card is kept whole (for a lossless export), so its JSON is what it costs."""
    if len(card_json) > max_json_bytes:
        raise CardTooLarge(
            f"The card's JSON is {len(card_json)} bytes; at most {max_json_bytes} are taken "
            "(a PNG's picture does not count)."
        )


def read_card(raw: bytes, max_json_bytes: int) -> dict[str, Any]:
    """The card in a PNG or a JSON file of at most MAX_CARD_BYTES, its JSON at most
    `max_json_bytes`."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardTooLarge(f"The card is larger than {MAX_CARD_BYTES} bytes.")
    if raw.startswith(PNG_SIGNATURE):
        return card_from_png(raw, max_json_bytes)
    return card_from_json(raw, max_json_bytes)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:  # cards in the wild carry null for empty fields
        return ""
    if not isinstance(value, str):
        raise BadCard(f"The card's '{key}' is not text.")
    return value.strip()


def import_card(card: dict[str, Any]) -> ImportedCard:
    """Map a V2/V3 card onto our fields; the card itself is kept whole."""
    if card.get("spec") not in (V2, V3):
        raise BadCard(f"Unsupported card spec {card.get('spec')!r}: expected {V2} or {V3}.")
    data = card.get("data")
    if not isinstance(data, dict):
        raise BadCard("The card has no 'data' object.")
    name, description = _text(data, "name"), _text(data, "description")
    # The description is the persona; a card with a personality alone makes that the persona.
    # Long ones are common (Chub, SillyTavern): cut like the other fields, kept whole in the card.
    persona = (description or _text(data, "personality"))[: max_length("persona")].strip()
    if not name or not persona:
        raise BadCard("The card needs a name and a description or personality.")
    if len(name) > max_length("name"):
        raise BadCard(f"The card's name is longer than {max_length('name')} characters.")
    tags = data.get("tags") or []
    if not isinstance(tags, list):
        raise BadCard("The card's 'tags' is not a list.")
    # Text fields are cut to our limits; the stored card keeps the full text for export.
    cut = {field: _text(data, key)[: max_length(field)] for key, field in CUT_FIELDS.items()}
    if not description:
        cut["personality"] = ""  # it is the persona already
    fields = {
        "name": name,
        "persona": persona,
        **cut,
        "tags": [t.strip()[:MAX_TAG_CHARS] for t in tags if isinstance(t, str) and t.strip()][
            :MAX_TAGS
        ],
        "alternate_greetings": _greetings(data.get("alternate_greetings") or []),
        "lorebook": _lorebook(data.get("character_book")),
    }
    return ImportedCard(fields, copy.deepcopy(card))


def _greetings(greetings: list[Any]) -> list[str]:
    texts = (g.strip()[:MAX_PROMPT_CHARS] for g in greetings if isinstance(g, str))
    return [g for g in texts if g][:MAX_GREETINGS]


# A book's texts the lorebook model bounds, cut to fit on import (as the card's fields are):
# one long entry, or RisuAI's long entry names, no longer refuse the whole card.
BOOK_TEXTS = {"name": MAX_NAME_CHARS, "description": MAX_CONTENT_CHARS}
ENTRY_TEXTS = {"content": MAX_CONTENT_CHARS, "comment": MAX_CONTENT_CHARS, "name": MAX_NAME_CHARS}


def _lorebook(book: object) -> Lorebook | None:
    """The working lorebook: the card's book with texts over the model's limits cut (the
    stored card keeps the whole book, which an export writes back until the lorebook is
    changed)."""
    if book is None:
        return None
    if isinstance(book, dict) and isinstance(book.get("entries"), list):
        entries = [_cut(e, ENTRY_TEXTS) if isinstance(e, dict) else e for e in book["entries"]]
        book = {**_cut(book, BOOK_TEXTS), "entries": entries}
    try:
        return Lorebook.model_validate(book)
    except ValidationError as exc:
        errors = [{**e, "loc": ("character_book", *e["loc"])} for e in exc.errors()]
        raise BadCard(f"The card's lorebook is invalid: {describe_errors(errors)}.") from exc


def _cut(fields: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
    return {
        key: value[: limits[key]] if key in limits and isinstance(value, str) else value
        for key, value in fields.items()
    }


def book_digest(book: dict[str, Any] | None) -> str | None:
    """What tells an export whether a lorebook was changed since import (the book itself is
    not kept a second time for that)."""
    if book is None:
        return None
    canonical = json.dumps(book, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- writing a card -----------------------------------------------------------------------


# Our fields and the card fields they are written back to.
CARD_KEYS = {
    "name": "name",
    "persona": "description",
    "personality": "personality",
    "description": "creator_notes",
    "sample_dialogue": "mes_example",
    "scenario": "scenario",
    "first_message": "first_mes",
    "alternate_greetings": "alternate_greetings",
    "system_prompt": "system_prompt",
    "post_history_instructions": "post_history_instructions",
    "nickname": "nickname",
    "tags": "tags",
}
LIST_OF = ("alternate_greetings", "tags")
# What both specs require of a lorebook's entries, with our model's defaults (V3 adds
# `use_regex`).
ENTRY_REQUIRED = {
    key: LoreEntry.model_fields[key].get_default(call_default_factory=True)
    for key in ("keys", "content", "extensions", "enabled", "insertion_order")
}


def export_card(character: dict[str, Any], spec: str = V3) -> dict[str, Any]:
    """A card for `character`: its imported card with our current fields written over the
    ones they came from (only where the user changed them), or a new card."""
    card = copy.deepcopy(character.get("card") or {})
    data = card.setdefault("data", {})
    imported = character.get("imported_fields") or {}
    persona_was_personality = _persona_was_personality(data, imported)
    for field, key in CARD_KEYS.items():
        value = copy.deepcopy(character.get(field))
        if value is None:
            value = [] if field in LIST_OF else ""
        if field in imported:
            if imported[field] != value:  # changed since the import: the edit wins
                data[key] = value
        elif value:  # set here; empty, the card's own is kept (imported before the field was)
            data[key] = value
    if persona_was_personality and not character.get("personality"):
        if imported.get("persona") != character.get("persona"):
            # The persona was the card's personality (or, imported before the personality was
            # a field, the description and personality joined): an edited persona replaces it.
            data["personality"] = ""
    _export_book(data, character.get("lorebook"), imported)
    _complete_book(data.get("character_book"), spec)
    _complete_data(data, spec)
    if spec == V3:
        _complete_for_v3(data, character.get("updated_at"))
        card.update(spec=V3, spec_version="3.0")
    else:
        card.update(spec=V2, spec_version="2.0")
    return card


def _persona_was_personality(data: dict[str, Any], imported: dict[str, Any]) -> bool:
    """Whether the card's personality went into the persona on import: a card without a
    description, or a character imported when the persona joined both (no personality)."""
    if not imported:
        return False
    description = data.get("description")
    return not (isinstance(description, str) and description.strip()) or (
        "personality" not in imported
    )


# What both specs require of a card's data, by type (V3 adds `group_only_greetings`).
REQUIRED_TEXTS = (
    "name", "description", "personality", "scenario", "first_mes", "mes_example",
    "creator_notes", "system_prompt", "post_history_instructions", "creator", "character_version",
)  # fmt: skip
REQUIRED_LISTS = ("alternate_greetings", "tags")


def _complete_data(data: dict[str, Any], spec: str) -> None:
    """Give a field the specs require, when missing, null or of another type (cards in the
    wild carry null for empty fields), the empty value of its type: strict readers refuse
    anything else. A list keeps its strings; a null `character_book` (optional) is left out."""
    for key in REQUIRED_TEXTS:
        if not isinstance(data.get(key), str):
            data[key] = ""
    for key in (*REQUIRED_LISTS, *(("group_only_greetings",) if spec == V3 else ())):
        value = data.get(key)
        data[key] = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
    if not isinstance(data.get("extensions"), dict):
        data["extensions"] = {}
    if "character_book" in data and data["character_book"] is None:
        del data["character_book"]


def _export_book(
    data: dict[str, Any], book: dict[str, Any] | None, imported: dict[str, Any]
) -> None:
    """The card keeps the book it came with unless the lorebook was changed since."""
    if "lorebook" in imported and imported["lorebook"] == book_digest(book):
        return
    if "lorebook" not in imported and book is None:
        return  # never had one here (or imported before lorebooks were read)
    if book is None:
        data.pop("character_book", None)
    else:
        data["character_book"] = copy.deepcopy(book)


def _complete_book(book: object, spec: str) -> None:
    """Add what the specs require of a book and its entries (a stored book keeps only the
    fields it was sent with), as the defaults a reader assumes; nothing there changes."""
    if not isinstance(book, dict):
        return
    book.setdefault("extensions", {})
    book.setdefault("entries", [])  # a book sent without any
    required = ENTRY_REQUIRED | ({"use_regex": False} if spec == V3 else {})
    for entry in book.get("entries") or []:
        if isinstance(entry, dict):
            for key, default in required.items():
                entry.setdefault(key, copy.deepcopy(default))


def _complete_for_v3(data: dict[str, Any], updated_at: str | None) -> None:
    """Add what V3 requires and V2 lacks (`group_only_greetings`: _complete_data)."""
    if updated_at:  # V3: exporters should set it, in Unix seconds
        stamp = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
        data["modification_date"] = int(stamp.timestamp())
