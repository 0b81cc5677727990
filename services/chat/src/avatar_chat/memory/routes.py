"""`/api/memories`: what a character remembers of its user, owner only (another caller's is
404): listed by character, written by hand (added, edited, pinned, deleted) besides what the
character learns in conversations (`learning`)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from avatar_chat.deps import ChatDep
from avatar_chat.memory.errors import MemoryNotFound, MemoryQuotaExceeded
from avatar_chat.memory.schemas import (
    CHARACTER_ID,
    Memory,
    MemoryChange,
    MemoryDeleted,
    MemoryPage,
    NewMemory,
)
from avatar_chat.memory.store import public
from avatar_chat.routes import CHARACTER_ERRORS
from avatar_chat.service import ChatService
from avatar_shared.envelope import Envelope, ok
from avatar_shared.errors import (
    COMMON,
    JSON_BODY,
    PARAMETERS,
    STORE,
    STORE_WRITES,
    ValidationFailed,
    error_responses,
)
from avatar_shared.identity import CALLER_ERRORS, WRITER_ERRORS, UserId
from avatar_shared.owned import Owner, PageKey
from avatar_shared.pages import TIME_AND_ID
from avatar_shared.rate import RATE_ERRORS, CallerDep

router = APIRouter(prefix="/api/memories", tags=["memories"], responses=error_responses(COMMON))

# Every write is the caller's, counted against their rate (MEMORY_WRITES_PER_MIN).
WRITE_ERRORS = (WRITER_ERRORS, RATE_ERRORS, STORE_WRITES)
READ_ERRORS = (CALLER_ERRORS, STORE)
MemoryId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The memory's id.")]


async def _writer(caller: CallerDep, chat: ChatDep) -> Owner:
    """The caller of a write, once it is counted against their rate: the owner of what it
    stores (an anonymous one with their client address, whose quotas they share)."""
    await chat.memory_writes.hit(caller.key)
    return Owner(caller.user_id, caller.address_key)


Writer = Annotated[Owner, Depends(_writer)]
Cursor = Annotated[PageKey | None, Depends(TIME_AND_ID.query())]


@router.get(
    "",
    response_model=Envelope[MemoryPage],
    summary="What characters remember of the caller, newest first",
    responses=error_responses(PARAMETERS, READ_ERRORS),
)
async def list_memories(
    chat: ChatDep,
    user_id: UserId,
    after: Cursor,
    character_id: Annotated[
        str | None, Query(pattern=CHARACTER_ID, description="Only this character's.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[MemoryPage]:
    page = await chat.memories.page(user_id, character_id, after, limit)
    memories = [Memory.model_validate(item) for item in page.items]
    return ok(MemoryPage(memories=memories, next_cursor=TIME_AND_ID.next_of(page)))


@router.post(
    "",
    response_model=Envelope[Memory],
    status_code=201,
    summary="Add a memory of the caller's to a character (a preset or one the caller may use)",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, MemoryQuotaExceeded, CHARACTER_ERRORS),
)
async def add_memory(body: NewMemory, chat: ChatDep, owner: Writer) -> Envelope[Memory]:
    _check_length(chat, body.text)
    await chat.characters.get(body.character_id)  # it exists (404 character_not_found)
    pinning = body.character_id if body.pinned else None
    async with _room_for_a_pin(chat, owner.user_id, pinning):
        record = await chat.memories.create(owner, body.character_id, body.text, body.pinned)
    return ok(Memory.model_validate(public(record)))


@router.get(
    "/{memory_id}",
    response_model=Envelope[Memory],
    responses=error_responses(PARAMETERS, READ_ERRORS, MemoryNotFound),
)
async def get_memory(memory_id: MemoryId, chat: ChatDep, user_id: UserId) -> Envelope[Memory]:
    return ok(Memory.model_validate(public(await chat.memories.get(memory_id, user_id))))


@router.patch(
    "/{memory_id}",
    response_model=Envelope[Memory],
    summary="Edit a memory's text (the old one kept in its history), pin or unpin it",
    responses=error_responses(JSON_BODY, WRITE_ERRORS, MemoryNotFound, MemoryQuotaExceeded),
)
async def change_memory(
    memory_id: MemoryId, body: MemoryChange, chat: ChatDep, owner: Writer
) -> Envelope[Memory]:
    if body.text is None and body.pinned is None:
        raise ValidationFailed("give a text, pinned, or both")
    if body.text is not None:
        _check_length(chat, body.text)
    pinning = None
    if body.pinned:
        pinning = (await chat.memories.get(memory_id, owner.user_id))["character_id"]
    async with _room_for_a_pin(chat, owner.user_id, pinning, memory_id):
        record = await chat.memories.change(memory_id, owner, body.text, body.pinned)
    return ok(Memory.model_validate(public(record)))


@router.delete(
    "/{memory_id}",
    response_model=Envelope[MemoryDeleted],
    responses=error_responses(PARAMETERS, WRITE_ERRORS, MemoryNotFound),
)
async def delete_memory(
    memory_id: MemoryId, chat: ChatDep, owner: Writer
) -> Envelope[MemoryDeleted]:
    await chat.memories.delete(memory_id, owner)
    return ok(MemoryDeleted(memory_id=memory_id, deleted=True))


@asynccontextmanager
async def _room_for_a_pin(
    chat: ChatService, user_id: str, character_id: str | None, memory_id: str | None = None
) -> AsyncIterator[None]:
    """For the block's write, which pins a memory of `character_id` (None: pins none; a
    `memory_id` already pinned: not one more), when the character's pins are within their bound:
    checked and written under the pin lock, so concurrent pins cannot pass it together."""
    if character_id is None:
        yield
        return
    async with chat.memories.pinning(user_id, character_id):
        memories = chat.memories
        pinned = memory_id is not None and (await memories.get(memory_id, user_id))["pinned"]
        most = chat.settings.max_pinned_memories
        if not pinned and await memories.pinned_count(user_id, character_id) >= most:
            raise MemoryQuotaExceeded(
                f"You pin {most} memories of this character, the most one may (pinned ones go "
                "into every prompt): unpin one first."
            )
        yield


def _check_length(chat: ChatService, text: str) -> None:
    if len(text) > chat.settings.memory_max_chars:
        raise ValidationFailed(f"text: at most {chat.settings.memory_max_chars} characters")
