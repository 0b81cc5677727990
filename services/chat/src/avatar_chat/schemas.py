"""Request and response models of the chat endpoints, as API.md states them, and the checks
of the limits that depend on settings (message count and lengths: `check_limits`)."""

from typing import Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
)

from avatar_chat.llm.base import Sampling
from avatar_chat.memory.schemas import MemoryMode
from avatar_chat.settings import ChatSettings
from avatar_shared.errors import ValidationFailed
from avatar_shared.json_types import JsonInt
from avatar_shared.lorebook import LoreLeftOut, LoreUsed
from avatar_shared.sampling import GenerationDefaults, SamplingControls


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A client-sent "system" role is refused: the server builds the system prompt.
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opponent: str | None = Field(None, max_length=2000)
    situation: str | None = Field(None, max_length=2000)
    background: str | None = Field(None, max_length=2000)


class GenerationOptions(SamplingControls):
    """How a reply is generated and spoken: what every call that makes one takes."""

    model_config = ConfigDict(extra="forbid")

    temperature: StrictFloat = Field(0.7, ge=0, le=2)
    max_tokens: JsonInt = Field(512, ge=1, le=4096)
    model: str | None = Field(None, min_length=1, max_length=200)
    tts_enabled: StrictBool = True
    tts_mode: Literal["realtime", "delayed", "on_click"] = "realtime"
    tts_delay_ms: JsonInt = Field(0, ge=0, le=60_000)
    tts_streaming_mode: JsonInt = Field(0, ge=0, le=3)
    stream: StrictBool = Field(
        False, description="Answer text/event-stream: delta events, then done."
    )

    def sampling(self, defaults: GenerationDefaults | None = None) -> Sampling:
        """The generation controls, as the LLM clients take them: the request's, else the
        character's `defaults` for those it leaves out."""
        controls = self.model_dump(include=set(SamplingControls.model_fields))
        if defaults is not None:
            for name, value in defaults.model_dump(include=set(controls)).items():
                if controls[name] is None:
                    controls[name] = value
        return Sampling(**{**controls, "stop": tuple(controls["stop"] or ())})

    def temperature_with(self, defaults: GenerationDefaults | None) -> float:
        """The request's temperature when it sends one, else the character's, else 0.7."""
        if "temperature" in self.model_fields_set or defaults is None:
            return self.temperature
        return self.temperature if defaults.temperature is None else defaults.temperature


# Who a conversation is played with: fixed when it starts (on the server), or sent with each
# turn (the client's `messages`).
_SETUP = ("persona", "character_id", "scenario", "user_persona_id")
_PERSONA_OR_CHARACTER: list[JsonValue] = [
    {"required": ["persona"], "properties": {"persona": {"type": "string", "minLength": 1}}},
    {"required": ["character_id"], "properties": {"character_id": {"type": "string"}}},
]


class ChatRequest(GenerationOptions):
    # Either the client's conversation (`messages`, with a persona or a character), or a new
    # message for a conversation kept on the server (`session_id` + `message` alone).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["messages"],
                    "not": {"required": ["message"]},
                    "anyOf": _PERSONA_OR_CHARACTER,
                },
                {
                    "required": ["session_id", "message"],
                    "not": {"anyOf": [{"required": [n]} for n in ("messages", *_SETUP)]},
                },
            ]
        },
    )

    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        description="The conversation so far, usually ending with the user's new message; "
        "one ending with the character's (assistant) message asks the character to speak "
        "again (only the reply is added to the session). Not with `message`.",
    )
    message: str | None = Field(
        None,
        min_length=1,
        description="The user's new message for the conversation `session_id` kept on the "
        "server (POST /api/chat/sessions): it is added to the stored conversation, which is "
        "what the model sees. Not with `messages`.",
    )
    # Empty counts as absent: the character's persona is used (as API.md says).
    persona: str | None = Field(None, max_length=8000)
    character_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    scenario: Scenario | None = None
    user_persona_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="One of the caller's user personas (`/api/personas`): its name is "
        "`{{user}}`, its description goes into the system message. Left out of a client's "
        "turn, `{{user}}` is DEFAULT_USER_NAME (the default persona is not looked up per "
        "turn: send it).",
    )
    session_id: UUID | None = None
    memory: MemoryMode | None = Field(
        None,
        description="Long-term memory for this client's conversation (with a "
        "`character_id`): `on` (the default) uses and learns, `read_only` uses, `off` "
        "neither. A conversation kept on the server has its own (PATCH its session).",
    )

    @property
    def on_server(self) -> bool:
        """A message for a conversation kept on the server."""
        return self.message is not None


def check_limits(body: ChatRequest, settings: ChatSettings) -> None:
    if body.on_server:
        _check_server_turn(body, settings)
        return
    if body.messages is None:
        raise ValidationFailed(
            "messages: send the conversation (messages), or a session_id and a message"
        )
    if not body.persona and not body.character_id:
        raise ValidationFailed("persona: give a persona or a character_id")
    if len(body.messages) > settings.max_messages:
        raise ValidationFailed(f"messages: at most {settings.max_messages} messages are allowed")
    for index, message in enumerate(body.messages):
        if message.role == "user":  # a reply may be longer (continued): max_total_chars bounds it
            check_message(message.content, f"messages.{index}.content", settings)
    if sum(len(m.content) for m in body.messages) > settings.max_total_chars:
        raise ValidationFailed(
            f"messages: at most {settings.max_total_chars} characters in all are allowed"
        )


def _check_server_turn(body: ChatRequest, settings: ChatSettings) -> None:
    if body.session_id is None:
        raise ValidationFailed("session_id: a message goes to a conversation: name it")
    if body.messages is not None:
        raise ValidationFailed("messages: send either messages or a message, not both")
    for name in (*_SETUP, "memory"):
        if getattr(body, name):
            raise ValidationFailed(
                f"{name}: a conversation kept on the server keeps what it was started with"
            )
    check_message(body.message or "", "message", settings)


def check_message(content: str, where: str, settings: ChatSettings) -> None:
    """What a user writes is at most MAX_MESSAGE_CHARS (a reply is bounded by the
    conversation's caps only: max_tokens and continue can make it longer)."""
    if len(content) > settings.max_message_chars:
        raise ValidationFailed(f"{where}: at most {settings.max_message_chars} characters")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class PromptTokens(BaseModel):
    """Estimated tokens of each part of the prompt (the LLM's own count of the whole is
    `usage.prompt_tokens`)."""

    system: int = Field(description="The rules: the card's system prompt, or ours.")
    character: int = Field(description="The character's description, personality, scenario.")
    persona: int = Field(description="The user's persona.")
    lore: int = Field(description="The lorebook entries that fired.")
    examples: int = Field(description="The example dialogue kept.")
    memories: int = Field(0, description="What the character remembers of the user.")
    summary: int = Field(description="The summary of older turns.")
    history: int = Field(description="The conversation's turns sent.")
    post_history: int = Field(
        0, description="The card's post-history instructions, the last message sent."
    )
    reserved: int = Field(description="Kept free for the reply (max_tokens).")


class MemoryUsed(BaseModel):
    id: str
    text: str
    pinned: bool


class PromptReceipt(BaseModel):
    """What the model saw: the parts of the prompt and the lore that went into it."""

    tokens: PromptTokens
    lore: list[LoreUsed]
    lore_left_out: list[LoreLeftOut]
    examples_left_out: int = Field(description="Example dialogue blocks left out for room.")
    memories: list[MemoryUsed] = Field(
        default_factory=list,
        description="The long-term memories in the prompt (/api/memories): pinned ones, then "
        "the most relevant to the last messages.",
    )


class ChatReply(BaseModel):
    content: str
    usage: Usage
    session_id: str
    audio_url: str | None
    context_summarized: bool
    context_truncated: bool = Field(
        False,
        description="The oldest turns were left out because they did not fit the context "
        "window and could not be summarized this time.",
    )
    tts_error: str | None = Field(
        None,
        description="Why no speech was made, when speech was asked for and failed (a "
        "streamed reply spoken by sentence: when none of its sentences could be spoken).",
    )
    audio_urls: list[str] | None = Field(
        None, description="Streamed replies with realtime speech: each sentence's audio, in order."
    )
    context: PromptReceipt | None = Field(None, description="What the model saw.")
    message_id: str | None = Field(
        None, description="The reply's message id in the stored conversation."
    )
    user_message_id: str | None = Field(
        None, description="The id the user's message was stored with (when one was)."
    )
    swipe_id: int | None = Field(
        None, description="Which alternate of its message the reply is (regenerate: the new one)."
    )


class ModelInfo(BaseModel):
    id: str
    name: str


class ModelList(BaseModel):
    models: list[ModelInfo]


class StoredMessage(BaseModel):
    id: str
    role: Literal["user", "assistant"]
    content: str = Field(description="The text shown: for a reply, its alternate shown.")
    at: str
    interrupted: bool = Field(
        description="Cut short: its client stopped the stream; this is what was sent."
    )
    swipes: list[str] | None = Field(
        description="A reply's alternates (regenerate adds one), at least its own text; "
        "null for the user's messages."
    )
    swipe_id: int | None = Field(description="Which of `swipes` is shown.")


class SessionSummary(BaseModel):
    content: str
    covered_turns: int = Field(
        description="It stands for the first this-many messages of the conversation."
    )
    created_at: str


class Conversation(BaseModel):
    """A session as the conversation list shows it."""

    session_id: str
    title: str | None = Field(
        description="Set by PATCH, else the first user message, cut; null before one."
    )
    character_id: str | None
    user_persona_id: str | None
    message_count: int = Field(description="Messages recorded in the session, in all.")
    preview: str | None = Field(description="The last message, cut.")
    created_at: str | None
    updated_at: str | None
    pinned: bool
    mode: Literal["server", "client"] = Field(
        description="`server`: kept on the server and steered there; `client`: its client "
        "sends the history (`messages`), the server keeps a record of it."
    )
    memory: MemoryMode = Field(
        "on",
        description="Long-term memory: `on` uses and learns, `read_only` uses, `off` neither.",
    )


class ConversationPage(BaseModel):
    conversations: list[Conversation]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class SessionHistory(Conversation):
    model: str | None
    usage: Usage
    messages: list[StoredMessage] = Field(
        description="A page of them, oldest first: by default the latest. A client's record "
        "keeps only the last MAX_STORED_MESSAGES."
    )
    first_message: int = Field(description="The number of the page's first message (from 0).")
    next_before: int | None = Field(
        description="Pass as `before` for the page of older messages; null on the oldest kept."
    )
    last_prompt_tokens: int = Field(description="The LLM's own count of the last prompt sent.")
    summary: SessionSummary | None = Field(
        description="The summary of older turns the last reply was given, if any."
    )


class StartConversation(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": _PERSONA_OR_CHARACTER})

    character_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    persona: str | None = Field(
        None, max_length=8000, description="The character's description (over the character's)."
    )
    user_persona_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="One of the caller's user personas (`/api/personas`). Left out, the "
        "caller's default persona, if any: kept with the conversation (a default chosen "
        "later does not change it).",
    )
    scenario: Scenario | None = None
    title: str | None = Field(None, min_length=1, max_length=100)
    greeting: JsonInt = Field(
        0,
        ge=0,
        le=64,
        description="Which greeting opens it: 0 the character's first message, n its n-th "
        "alternate greeting (all of them are the opening message's alternates).",
    )
    memory: MemoryMode = Field(
        "on",
        description="Long-term memory: `on` uses what the character remembers of you and "
        "learns more, `read_only` uses it and learns nothing (trying something out), `off` "
        "neither.",
    )


class ConversationChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    title: str | None = Field(None, min_length=1, max_length=100)
    pinned: StrictBool | None = Field(None, description="Pinned conversations list first.")
    memory: MemoryMode | None = Field(None, description="Its long-term memory mode.")


class MessageEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)


class SwipeChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: JsonInt = Field(ge=0, le=1000, description="Which alternate to show, from 0.")


class BranchPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The branch holds the messages up to and with this one.",
    )


class MessageDeleted(BaseModel):
    message_id: str
    deleted: bool


class Released(BaseModel):
    session_id: str
    released: bool


class Deleted(BaseModel):
    session_id: str
    deleted: bool


def _sse_event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One kind of event of the stream: its name, and its data (JSON text) described."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


def _texts(*names: str) -> dict[str, Any]:
    return {"type": "object", "required": list(names), "properties": {n: {} for n in names}}


# A spoken sentence: `tts_error` says why it has no audio (then audio_url is null).
_AUDIO_EVENT = {
    **_texts("index", "text", "audio_url"),
    "properties": {
        "index": {"type": "integer"},
        "text": {"type": "string"},
        "audio_url": {"type": ["string", "null"]},
        "tts_error": {"type": "string"},
    },
}

# Each event of a streamed reply (`stream: true`), as the text/event-stream item schema.
SSE_EVENT: dict[str, Any] = {
    "oneOf": [
        _sse_event("delta", _texts("content")),
        _sse_event("audio", _AUDIO_EVENT),
        _sse_event("done", _texts("content", "usage", "session_id")),
        _sse_event("error", _texts("code", "message")),
    ]
}

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'With `stream: true`: `event: delta` (data `{"content"}`) as text '
        "arrives, `event: audio` (data `{index, text, audio_url}`, and `tts_error` "
        "when the sentence could not be spoken) per sentence with realtime speech, then one "
        "`event: done` whose data is the non-streaming `data` object; a failure after the "
        "first delta ends the stream with `event: error` "
        '(data `{"code", "message"}`).',
        "content": {"text/event-stream": {"schema": SSE_EVENT, "itemSchema": SSE_EVENT}},
    }
}
