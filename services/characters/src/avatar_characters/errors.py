"""Every error of the characters service, each with the status and code of the envelope."""

from avatar_shared.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NamedNotFound,
    ServiceUnavailable,
)


class CharacterNotFound(NamedNotFound):
    code, what = "character_not_found", "Character"


# A well-formed voice_id the tts service does not have: the request is fine, the voice list
# (the server's state) does not allow it. Not 404: the character asked for may well exist.
class UnknownVoice(Conflict):
    code, message = "unknown_voice", "voice_id: there is no such voice; see GET /api/tts/voices."

    def __init__(self, voice_id: str) -> None:
        super().__init__(f"voice_id: there is no voice '{voice_id}'; see GET /api/tts/voices.")


class NotYourCharacter(Forbidden):
    code, message = "not_owner", "Only the user who made this character may change it."


class PresetReadOnly(Forbidden):
    code, message = "preset_read_only", "Preset characters cannot be changed or deleted."


class BadCard(AppError):
    status_code, code, message = 422, "invalid_card", "The character card is invalid."


class CardTooLarge(AppError):
    status_code, code, message = 413, "card_too_large", "The character card is too large."


class CharacterTooLarge(CardTooLarge):
    """A write whose character could not be imported back: its card (the export) would pass
    MAX_CARD_JSON_BYTES."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"The character would be {size} bytes of card JSON (as exported); at most {limit} "
            "are kept, as many as an import takes. Make its lorebook or texts smaller."
        )


class ImportTooLarge(CardTooLarge):
    """A card within MAX_CARD_JSON_BYTES whose character would export larger (the specs'
    required fields filled in): it could not be imported back, nor edited."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"The character this card makes would be {size} bytes of card JSON as exported "
            f"(the fields the specs require added, to each lorebook entry too); at most {limit} "
            "are taken. Make its lorebook or texts smaller."
        )


class UnsupportedCardUpload(AppError):
    status_code, code = 415, "unsupported_media_type"
    message = "Send the card as multipart/form-data (field 'file') or as an application/json body."


class MissingCardFile(BadRequest):
    code, message = "missing_file", "The form has no 'file' field with the card."


class QuotaExceeded(AppError):
    status_code, code = 409, "quota_exceeded"
    message = "You keep as many characters (or bytes of them) as one user may; delete one first."


class UnknownFormFields(AppError):
    status_code, code = 422, "validation_error"
    message = "The form has fields this endpoint does not take."

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"The form has fields this endpoint does not take: {', '.join(names)}.")


class LorebookTestsBusy(ServiceUnavailable):
    code = "lorebook_tests_busy"
    message = "Too many lorebook tests are running; try again in a moment."
