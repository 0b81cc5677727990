from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from avatar_characters.cards import CARD_SCHEMA, MAX_CARD_BYTES
from avatar_characters.deps import (
    CharactersDep,
    IfMatchDep,
    Listing,
    LoreTesterId,
    OwnCursor,
    PersonasDep,
    PresetCursor,
    Writer,
)
from avatar_characters.errors import (
    BadCard,
    CardTooLarge,
    CharacterNotFound,
    LorebookTestsBusy,
    MissingCardFile,
    NotYourCharacter,
    PresetReadOnly,
    QuotaExceeded,
    UnknownFormFields,
    UnknownVoice,
    UnsupportedCardUpload,
)
from avatar_characters.personas.errors import PersonaNotFound
from avatar_characters.schemas import (
    Character,
    CharacterFields,
    CharacterPage,
    CharacterPatch,
    CharacterReplacement,
    Deleted,
    Greetings,
    LorebookEnvelope,
    LorebookTestBody,
    LorebookTestResult,
    SentBook,
)
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    FORM_BODY,
    JSON_BODY,
    PARAMETERS,
    STORE,
    STORE_WRITES,
    PreconditionFailed,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.rate import RATE_ERRORS

T = TypeVar("T")


def _tagged(response: Response, answer: T, version: str | None) -> T:
    """`answer`, its character's version sent as its ETag (If-Match takes it back)."""
    if version is not None:
        response.headers["ETag"] = f'"{version}"'
    return answer


router = APIRouter(prefix="/api/characters", tags=["characters"], responses=error_responses(COMMON))

# As chat's `user_persona_id` takes it.
PERSONA_ID = r"^[A-Za-z0-9_-]{1,64}$"
# Every write is the caller's, counted against their rate.
WRITE_ERRORS = (WRITER_ERRORS, RATE_ERRORS, STORE_WRITES)
# A change to a character that exists: the caller's own, not a preset, as the caller read it
# (when If-Match says which version that was).
CHANGE_ERRORS = (CharacterNotFound, NotYourCharacter, PresetReadOnly, PreconditionFailed)
# A character written: its voice, the caller's quotas, its size (what an import takes).
CHARACTER_WRITE_ERRORS = (UnknownVoice, QuotaExceeded, CardTooLarge)
# A card import takes JSON or a form (the route reads the body itself).
CARD_ERRORS = (
    FORM_BODY,
    (MissingCardFile, CardTooLarge, UnsupportedCardUpload, BadCard, UnknownFormFields),
)


@router.get(
    "/presets", response_model=Envelope[CharacterPage], responses=error_responses(PARAMETERS)
)
async def list_presets(
    chars: CharactersDep, listing: Listing, after: PresetCursor
) -> Envelope[CharacterPage]:
    return ok(chars.list_presets(listing, after))


@router.get(
    "",
    response_model=Envelope[CharacterPage],
    summary="The caller's own characters",
    responses=error_responses(PARAMETERS, CALLER_ERRORS),
)
async def list_own(
    chars: CharactersDep, listing: Listing, after: OwnCursor, user_id: UserId
) -> Envelope[CharacterPage]:
    return ok(await chars.list_own(user_id, listing, after))


@router.post(
    "",
    response_model=Envelope[Character],
    status_code=201,
    responses=error_responses(JSON_BODY, WRITE_ERRORS, CHARACTER_WRITE_ERRORS),
)
async def create(body: CharacterFields, chars: CharactersDep, owner: Writer) -> Envelope[Character]:
    return ok(await chars.create(owner, body))


@router.post(
    "/import",
    response_model=Envelope[Character],
    status_code=201,
    summary="Create a character from a Character Card V2/V3 (PNG or JSON)",
    responses=error_responses(CARD_ERRORS, WRITE_ERRORS, QuotaExceeded),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "A PNG with a chara/ccv3 chunk, or a JSON card",
                            }
                        },
                        "required": ["file"],
                        "additionalProperties": False,
                    }
                },
                "application/json": {"schema": CARD_SCHEMA},
            },
        }
    },
)
async def import_card(request: Request, chars: CharactersDep, owner: Writer) -> Envelope[Character]:
    return ok(await chars.import_card(owner, await _card_bytes(request)))


async def _card_bytes(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        return await request.body()
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedCardUpload()
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise MissingCardFile()
    if unknown := set(form) - {"file"}:
        raise UnknownFormFields(sorted(unknown))
    return await upload.read(MAX_CARD_BYTES + 1)  # enough for read_card to see it is too big


@router.get(
    "/{character_id}",
    response_model=Envelope[Character],
    responses=error_responses(PARAMETERS, CharacterNotFound, STORE),
)
async def get_one(
    character_id: str, chars: CharactersDep, response: Response
) -> Envelope[Character]:
    character, version = await chars.get_versioned(character_id)
    return ok(_tagged(response, character, version))


@router.get(
    "/{character_id}/export",
    summary="The character as a Character Card V3 (JSON) or a PNG with chara and ccv3 chunks",
    responses={
        200: {"content": {"application/json": {}, "image/png": {}}},
        **error_responses(PARAMETERS, CharacterNotFound, STORE),
    },
)
async def export(
    character_id: str, chars: CharactersDep, format: Literal["json", "png"] = "json"
) -> Response:
    body = await chars.export(character_id, as_png=format == "png")
    media_type = "image/png" if format == "png" else "application/json"
    filename = f"{character_id}.{'png' if format == 'png' else 'json'}"
    disposition = f'attachment; filename="{filename}"'
    return Response(body, media_type=media_type, headers={"Content-Disposition": disposition})


@router.put(
    "/{character_id}",
    response_model=Envelope[Character],
    summary="Replace every editable field",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, CHANGE_ERRORS, CHARACTER_WRITE_ERRORS),
)
async def replace(
    character_id: str,
    body: CharacterReplacement,
    chars: CharactersDep,
    owner: Writer,
    if_match: IfMatchDep,
    response: Response,
) -> Envelope[Character]:
    return ok(_tagged(response, *await chars.replace(character_id, owner, body, if_match)))


@router.patch(
    "/{character_id}",
    response_model=Envelope[Character],
    summary="Change some fields",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, CHANGE_ERRORS, CHARACTER_WRITE_ERRORS),
)
async def patch(
    character_id: str,
    body: CharacterPatch,
    chars: CharactersDep,
    owner: Writer,
    if_match: IfMatchDep,
    response: Response,
) -> Envelope[Character]:
    return ok(_tagged(response, *await chars.patch(character_id, owner, body, if_match)))


@router.get(
    "/{character_id}/lorebook",
    response_model=LorebookEnvelope,
    summary="The character's lorebook (an empty one when it has none)",
    responses=error_responses(PARAMETERS, CharacterNotFound, STORE),
)
async def get_lorebook(
    character_id: str, chars: CharactersDep, response: Response
) -> LorebookEnvelope:
    # The character's version: a lorebook editor sends it back in PUT's If-Match.
    return LorebookEnvelope.of(_tagged(response, *await chars.lorebook(character_id)))


@router.put(
    "/{character_id}/lorebook",
    response_model=LorebookEnvelope,
    summary="Replace the character's lorebook (Card V2 character_book, V3 additions)",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, CHANGE_ERRORS, QuotaExceeded, CardTooLarge),
)
async def replace_lorebook(
    character_id: str,
    body: SentBook,
    chars: CharactersDep,
    owner: Writer,
    if_match: IfMatchDep,
    response: Response,
) -> LorebookEnvelope:
    book, version = await chars.replace_lorebook(character_id, owner, body, if_match)
    return LorebookEnvelope.of(_tagged(response, book, version))


@router.get(
    "/{character_id}/greetings",
    response_model=Envelope[Greetings],
    summary="The greeting and its alternates, with {{char}} and {{user}} expanded for the caller",
    responses=error_responses(PARAMETERS, CALLER_ERRORS, CharacterNotFound, PersonaNotFound, STORE),
)
async def greetings(
    character_id: str,
    chars: CharactersDep,
    personas: PersonasDep,
    user_id: UserId,
    user_persona_id: Annotated[
        str | None,
        Query(
            pattern=PERSONA_ID,
            description="One of the caller's personas (`/api/personas`): its name is "
            "`{{user}}`; left out, DEFAULT_USER_NAME is (as chat plays a client that names "
            "none), even when the caller has a default persona: name it to greet as it.",
        ),
    ] = None,
) -> Envelope[Greetings]:
    character = await chars.get(character_id)
    # Not the default persona when none is named: chat's client mode plays such a user as
    # DEFAULT_USER_NAME, and the greeting must greet the user the model is told of.
    persona = None if user_persona_id is None else await personas.get(user_persona_id, user_id)
    return ok(chars.greetings(character, None if persona is None else persona.name))


@router.post(
    "/{character_id}/lorebook/test",
    response_model=Envelope[LorebookTestResult],
    summary="Which lorebook entries a conversation would activate, and why (no LLM is called)",
    responses=error_responses(
        JSON_BODY, WRITER_ERRORS, RATE_ERRORS, CharacterNotFound, LorebookTestsBusy, STORE
    ),
)
async def lorebook_test(
    character_id: str, body: LorebookTestBody, chars: CharactersDep, _: LoreTesterId
) -> Envelope[LorebookTestResult]:
    return ok(await chars.test_lorebook(character_id, body))


@router.delete(
    "/{character_id}",
    response_model=Envelope[Deleted],
    responses=error_responses(PARAMETERS, WRITE_ERRORS, CHANGE_ERRORS),
)
async def delete(
    character_id: str, chars: CharactersDep, owner: Writer, if_match: IfMatchDep
) -> Envelope[Deleted]:
    await chars.delete(character_id, owner, if_match)
    return ok(Deleted(id=character_id, deleted=True))
