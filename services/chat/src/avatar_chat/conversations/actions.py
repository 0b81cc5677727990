"""What the conversation endpoints do, besides generating (regenerate and continue are turns:
`flows`): start, branch, import and export a conversation; edit, delete and swipe its
messages. Each acts on the caller's own conversation (another's is 404) and changes it in one
compare-and-set step that refuses while a reply for it is being generated (409)."""

import json
import logging
from contextlib import suppress
from typing import Any

import anyio
from redis.exceptions import RedisError

from avatar_chat.context.summaries import prefix_digests
from avatar_chat.conversations import messages as msgs
from avatar_chat.conversations import sillytavern
from avatar_chat.conversations.upload import file_limit
from avatar_chat.errors import MessageNotFound
from avatar_chat.memory.learning import read_marks
from avatar_chat.schemas import (
    ConversationChange,
    MessageEdit,
    SessionHistory,
    StartConversation,
    check_message,
)
from avatar_chat.service import ChatService, Setup
from avatar_chat.store import SessionState
from avatar_shared.errors import AppError, ValidationFailed
from avatar_shared.locks import LockTimeout
from avatar_shared.owned import Owner
from avatar_shared.peers import PeerRejected
from avatar_shared.rate import Caller
from avatar_shared.timestamps import utc_now

FIRST_PAGE = 100  # messages a start, branch or import answers with

log = logging.getLogger(__name__)


async def start(chat: ChatService, body: StartConversation, caller: Caller) -> SessionHistory:
    """A new conversation opened by the chosen greeting, the character's other greetings its
    alternates (as SillyTavern shows them), played as the persona named or the caller's
    default one (`bound_persona`)."""
    await chat.chat_rate.hit(caller.key)
    setup = Setup(body.persona, body.character_id, body.scenario, body.user_persona_id)
    await chat.character(setup)  # it exists and can be played
    await chat.user_persona(setup, caller.identity)  # the caller's own, if named
    setup = await chat.bound_persona(setup, caller.identity)  # else their default, if any
    opening = []
    if body.character_id:
        greetings = await chat.characters.greetings(
            body.character_id, setup.user_persona_id, caller.identity
        )
        opening = _opening(greetings, body.greeting)
    elif body.greeting:
        raise ValidationFailed("greeting: a conversation without a character has no greetings")
    fields = {**setup.fields(), "title": body.title or "", "memory": body.memory}
    session_id = await chat.sessions.create(caller.identity, fields, opening)
    return await history(chat, session_id, caller)


def _opening(greetings: list[tuple[int, str]], chosen: int) -> list[msgs.Message]:
    if not greetings:
        if chosen:
            raise ValidationFailed("greeting: this character has no greetings")
        return []
    numbers = [number for number, _ in greetings]
    if chosen not in numbers:
        raise ValidationFailed(f"greeting: this character's greetings are {numbers}")
    now = utc_now()
    alternates = [{"content": text, "at": now} for _, text in greetings]
    first = msgs.new_message("assistant", alternates[0]["content"], now)
    return [msgs.showing(first, alternates, numbers.index(chosen))]


async def branch(
    chat: ChatService, session_id: str, message_id: str, caller: Caller
) -> SessionHistory:
    """A new conversation holding this one's messages up to and with `message_id`, played
    with the same character and persona, sharing the summaries of that prefix."""
    await chat.chat_rate.hit(caller.key)
    state = await _conversation(chat, session_id, caller)
    index = _index_of(state, message_id)
    meta = state.meta
    fields = {**Setup.stored(meta).fields(), "title": meta.get("title", "")}
    fields["branched_from"] = session_id
    # A branch is of its conversation's lineage: memories learned past its message stay out.
    fields["root"] = meta.get("root") or session_id
    fields["memory"] = meta.get("memory", "")
    # What was read of the prefix counts as read in the branch too: not read again there.
    marks = [[n, d] for n, d in read_marks(meta) if n <= index + 1]
    fields["memory_marks"] = json.dumps(marks) if marks else ""
    kept = state.messages[: index + 1]
    new_id = await chat.sessions.create(caller.identity, fields, kept, spare=session_id)
    await chat.sessions.copy_summaries(session_id, new_id, len(kept))
    return await history(chat, new_id, caller)


async def edit(
    chat: ChatService, session_id: str, message_id: str, change: MessageEdit, caller: Caller
) -> dict[str, Any]:

    def edited(message: msgs.Message) -> msgs.Message:
        if message["role"] == "user":  # a reply is bounded by the conversation's bytes
            check_message(change.content, "content", chat.settings)
        return msgs.with_content(message, change.content)

    return await _replace(chat, session_id, message_id, caller, edited, True)


async def swipe(
    chat: ChatService, session_id: str, message_id: str, index: int, caller: Caller
) -> dict[str, Any]:
    def chosen(message: msgs.Message) -> msgs.Message:
        try:
            return msgs.with_swipe(message, index)
        except IndexError:
            count = len(msgs.alternates(message))
            raise ValidationFailed(f"index: this message has {count} alternates, from 0") from None

    return await _replace(chat, session_id, message_id, caller, chosen)


async def delete_message(
    chat: ChatService, session_id: str, message_id: str, caller: Caller
) -> None:
    state = await _conversation(chat, session_id, caller)
    index = _index_of(state, message_id)
    remaining = state.messages[:index] + state.messages[index + 1 :]
    await chat.sessions.change_message(
        session_id, caller.identity, index, state.raw[index], None, remaining
    )
    await _forget_edited(chat, session_id, state, remaining, caller)


async def _replace(
    chat: ChatService,
    session_id: str,
    message_id: str,
    caller: Caller,
    change: Any,
    writes: bool = False,
) -> dict[str, Any]:
    """`writes`: the change is new text (an edit, not a swipe's choice), which is flagged
    `unlearned` when written while the conversation's memory is read_only or off."""
    state = await _conversation(chat, session_id, caller)
    index = _index_of(state, message_id)
    stored = state.messages
    changed = change(stored[index])
    if writes and state.meta.get("memory") in ("read_only", "off"):
        changed = msgs.unlearned(changed)
    stored[index] = changed
    await chat.sessions.change_message(
        session_id, caller.identity, index, state.raw[index], changed, stored, choice=not writes
    )
    await _forget_edited(chat, session_id, state, stored, caller)
    return msgs.public(changed, index)


async def _forget_edited(
    chat: ChatService,
    session_id: str,
    state: SessionState,
    now: list[msgs.Message],
    caller: Caller,
) -> None:
    """What the character learned from the messages an edit or a delete took away is
    forgotten (the edit stands if that fails: the memories are then left out of this
    conversation's lineage by their digests, and forgotten at its next reading)."""
    character_id = state.meta.get("character_id")
    if not character_id:
        return
    try:
        await chat.learner.drop_job(session_id)  # its messages are read again at a later turn
        recalled = await chat.memories.recall(caller.user_id, character_id)
        digests = prefix_digests(msgs.turns(now))
        owner = Owner(caller.user_id, caller.address_key)
        memories = recalled.memories
        await chat.learner.forget_edited(owner, character_id, session_id, memories, None, digests)
        await chat.learner.prune_marks(session_id, digests)
    except (AppError, RedisError, ValueError, LockTimeout) as exc:  # the merges' lock held
        log.warning("memories of edited session %s not forgotten: %s", session_id, exc)


async def rename(
    chat: ChatService, session_id: str, change: ConversationChange, caller: Caller
) -> dict[str, Any]:
    if change.title is None and change.pinned is None and change.memory is None:
        raise ValidationFailed("give a title, pinned or memory")
    return await chat.sessions.rename(
        session_id, caller.user_id, change.title, change.pinned, change.memory
    )


async def export(chat: ChatService, session_id: str, caller: Caller) -> tuple[str, bytes]:
    """The conversation as SillyTavern's chat JSONL, and a file name for it."""
    state = await _conversation(chat, session_id, caller)
    user, character = await _names(chat, Setup.stored(state.meta), caller)
    created = state.meta.get("created_at") or utc_now()
    data = sillytavern.export_jsonl(user, character, created, state.messages)
    return f"{_file_stem(character)} - {created[:10]}.jsonl", data


async def _names(chat: ChatService, setup: Setup, caller: Caller) -> tuple[str, str]:
    """The user's and the character's names for an export. A character or persona deleted
    since (anyone may play another's character) leaves a default name: the conversation is
    still the user's to take."""
    character, user = "Character", chat.settings.default_user_name
    with suppress(PeerRejected):  # its 404: other failures answer as they are
        card, _ = await chat.character(setup)
        character = card.nickname or card.name or character
    with suppress(PeerRejected):
        user = (await chat.user_persona(setup, caller.identity)).name
    return user, character


async def import_chat(
    chat: ChatService, data: bytes, setup: Setup, caller: Caller
) -> SessionHistory:
    """A SillyTavern chat file as a new conversation with the named character. What can be
    refused without reading the file is asked first; the file (up to twice MAX_STORED_BYTES
    of JSON) is read in a worker thread, so that other requests' streams go on meanwhile."""
    await chat.chat_rate.hit(caller.key)
    await chat.character(setup)
    await chat.user_persona(setup, caller.identity)
    setup = await chat.bound_persona(setup, caller.identity)
    await chat.sessions.check_room(caller.identity)
    settings = chat.settings
    limits = sillytavern.ImportLimits(
        max_bytes=file_limit(settings),
        max_messages=settings.max_stored_messages,
        max_message_chars=settings.max_message_chars,
        max_swipes=settings.max_swipes,
    )
    chat_file = await anyio.to_thread.run_sync(
        sillytavern.import_jsonl, data, limits, limiter=chat.import_parsing
    )
    fields = {**setup.fields(), "title": msgs.title(chat_file.messages)}
    if chat_file.created_at:  # the chat's own date, kept through an export
        fields["created_at"] = chat_file.created_at
    session_id = await chat.sessions.create(caller.identity, fields, chat_file.messages)
    return await history(chat, session_id, caller)


async def history(chat: ChatService, session_id: str, caller: Caller) -> SessionHistory:
    page = await chat.sessions.history(session_id, caller.user_id, FIRST_PAGE, None)
    return SessionHistory.model_validate(page)


async def _conversation(chat: ChatService, session_id: str, caller: Caller) -> SessionState:
    return await chat.sessions.load(session_id, caller.user_id, with_messages=True)


def _index_of(state: SessionState, message_id: str) -> int:
    for index, raw in enumerate(state.raw):
        if json.loads(raw).get("id") == message_id:
            return index
    raise MessageNotFound(message_id)


def _file_stem(name: str) -> str:
    """A name safe in a Content-Disposition header and on every file system."""
    kept = "".join(c if c.isalnum() or c in " _-" else "_" for c in name).strip()
    return kept[:60] or "chat"
