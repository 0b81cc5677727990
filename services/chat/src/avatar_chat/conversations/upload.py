"""Reading an imported chat file: a multipart/form-data body with the file and who the
conversation is played with (the file names its characters only by name)."""

import re
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from avatar_chat.service import Setup
from avatar_chat.settings import ChatSettings
from avatar_shared.errors import FORM_BODY, AppError, BadRequest, ValidationFailed

JSONL = "application/jsonl"
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FIELDS = {"file", "character_id", "user_persona_id"}


class UnsupportedUpload(AppError):
    status_code, code = 415, "unsupported_media_type"
    message = "Send the chat file as multipart/form-data (field 'file')."


class MissingFile(BadRequest):
    code, message = "missing_file", "The form has no 'file' field with the chat file."


UPLOAD_ERRORS = (*FORM_BODY, UnsupportedUpload, MissingFile)

IMPORT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "A SillyTavern chat file (.jsonl)",
                    },
                    "character_id": {
                        "type": "string",
                        "pattern": ID.pattern,
                        "description": "The character the conversation is played with.",
                    },
                    "user_persona_id": {
                        "type": "string",
                        "pattern": ID.pattern,
                        "description": "One of the caller's personas; left out, their "
                        "default one, if any, kept with the conversation.",
                    },
                },
                "required": ["file", "character_id"],
                "additionalProperties": False,
            }
        }
    },
}


def file_limit(settings: ChatSettings) -> int:
    """The largest chat file taken: SillyTavern's lines carry more than the messages we keep
    of them (dates, generation details), so twice what a conversation may hold."""
    return 2 * settings.max_stored_bytes


async def read_import(request: Request, settings: ChatSettings) -> tuple[bytes, Setup]:
    """The file's bytes (one more than may be imported, at most: the parser says it is too
    big) and the conversation's setup."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedUpload()
    form = await request.form(max_files=1, max_fields=len(FIELDS))
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise MissingFile()
    if unknown := set(form) - FIELDS:
        raise ValidationFailed(
            f"the form has fields this endpoint does not take: {sorted(unknown)}"
        )
    ids = {}
    for name in ("character_id", "user_persona_id"):
        value = form.get(name)
        if value is not None and (not isinstance(value, str) or not ID.match(value)):
            raise ValidationFailed(f"{name}: letters, digits, '_' and '-', 1 to 64 of them")
        ids[name] = value
    if ids["character_id"] is None:
        raise ValidationFailed("character_id: name the character the chat is played with")
    data = await upload.read(file_limit(settings) + 1)
    return data, Setup(character_id=ids["character_id"], user_persona_id=ids["user_persona_id"])
