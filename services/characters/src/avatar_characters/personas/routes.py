"""`/api/personas`: the caller's user personas, owner only (another caller's is 404)."""

from typing import Annotated

from fastapi import APIRouter, Query

from avatar_characters.deps import OwnCursor, PersonasDep, Writer
from avatar_characters.personas.errors import (
    NoDefaultPersona,
    PersonaNotFound,
    PersonaQuotaExceeded,
)
from avatar_characters.personas.schemas import (
    Persona,
    PersonaFields,
    PersonaPage,
    PersonaReplacement,
)
from avatar_characters.schemas import Deleted
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    JSON_BODY,
    PARAMETERS,
    STORE,
    STORE_WRITES,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.rate import RATE_ERRORS

router = APIRouter(prefix="/api/personas", tags=["personas"], responses=error_responses(COMMON))

# Every write is the caller's, counted against their rate (CHARACTER_WRITES_PER_MIN).
WRITE_ERRORS = (WRITER_ERRORS, RATE_ERRORS, STORE_WRITES)
READ_ERRORS = (CALLER_ERRORS, STORE)


@router.get(
    "",
    response_model=Envelope[PersonaPage],
    summary="The caller's personas, newest first",
    responses=error_responses(PARAMETERS, READ_ERRORS),
)
async def list_own(
    personas: PersonasDep,
    user_id: UserId,
    after: OwnCursor,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[PersonaPage]:
    return ok(await personas.list(user_id, after, limit))


@router.post(
    "",
    response_model=Envelope[Persona],
    status_code=201,
    responses=error_responses(JSON_BODY, WRITE_ERRORS, PersonaQuotaExceeded),
)
async def create(body: PersonaFields, personas: PersonasDep, owner: Writer) -> Envelope[Persona]:
    return ok(await personas.create(owner, body))


# Before `/{persona_id}`, so that "default" is not read as an id (ids are "per_…" anyway).
@router.get(
    "/default",
    response_model=Envelope[Persona],
    summary="The caller's default persona (chat reads it so, with the caller's credentials, "
    "when a conversation it keeps starts without a user_persona_id)",
    responses=error_responses(READ_ERRORS, NoDefaultPersona),
)
async def get_default(personas: PersonasDep, user_id: UserId) -> Envelope[Persona]:
    persona = await personas.get_default(user_id)
    if persona is None:
        raise NoDefaultPersona()
    return ok(persona)


@router.get(
    "/{persona_id}",
    response_model=Envelope[Persona],
    summary="One of the caller's personas (chat reads one this way, with the caller's credentials)",
    responses=error_responses(PARAMETERS, READ_ERRORS, PersonaNotFound),
)
async def get_one(persona_id: str, personas: PersonasDep, user_id: UserId) -> Envelope[Persona]:
    return ok(await personas.get(persona_id, user_id))


@router.put(
    "/{persona_id}",
    response_model=Envelope[Persona],
    summary="Replace its name and description (and choose or give up the default); the "
    "read-only keys GET answered may be sent back, and are ignored",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, PersonaNotFound, PersonaQuotaExceeded),
)
async def replace(
    persona_id: str, body: PersonaReplacement, personas: PersonasDep, owner: Writer
) -> Envelope[Persona]:
    return ok(await personas.replace(persona_id, owner, body))


@router.delete(
    "/{persona_id}",
    response_model=Envelope[Deleted],
    responses=error_responses(PARAMETERS, WRITE_ERRORS, PersonaNotFound),
)
async def delete(persona_id: str, personas: PersonasDep, owner: Writer) -> Envelope[Deleted]:
    await personas.delete(persona_id, owner)
    return ok(Deleted(id=persona_id, deleted=True))
