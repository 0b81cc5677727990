"""Every error of the characters service, each with the status and code of the envelope."""

from avatar_shared.errors import AppError, BadRequest, Forbidden, NamedNotFound


class CharacterNotFound(NamedNotFound):
    code, what = "character_not_found", "Character"


class NotYourCharacter(Forbidden):
    code, message = "not_owner", "Only the user who made this character may change it."


class PresetReadOnly(Forbidden):
    code, message = "preset_read_only", "Preset characters cannot be changed or deleted."


class BadCard(AppError):
    status_code, code, message = 422, "invalid_card", "The character card is invalid."


class CardTooLarge(AppError):
    status_code, code, message = 413, "card_too_large", "The character card is too large."


class UnsupportedCardUpload(AppError):
    status_code, code = 415, "unsupported_media_type"
    message = "Send the card as multipart/form-data (field 'file') or as an application/json body."


class MissingCardFile(BadRequest):
    code, message = "missing_file", "The form has no 'file' field with the card."


class QuotaExceeded(AppError):
    status_code, code = 409, "quota_exceeded"
