"""One chat turn as it is planned before the LLM is called, and the checks that need settings
or an estimate (the schema checks the rest)."""

import json
from dataclasses import dataclass

from avatar_chat.context.planner import Context
from avatar_chat.context.tokens import TokenEstimator, learn_calibration
from avatar_chat.llm import LlmReply, LlmRequest
from avatar_chat.schemas import ChatRequest
from avatar_chat.settings import ChatSettings
from avatar_chat.store import TurnRecord
from avatar_shared.errors import ValidationFailed


@dataclass(frozen=True)
class Turn:
    body: ChatRequest
    session_id: str
    is_new: bool  # no session_id was sent: this turn starts the session
    voice_id: str | None
    llm_request: LlmRequest  # what the LLM gets
    context: Context  # how the conversation was fitted into the window (at first: as sent)

    def record(self, reply: LlmReply) -> TurnRecord:
        """The finished turn, as the session stores it."""
        messages = self.llm_request.messages
        return TurnRecord(
            exchanged=[
                {"role": "user", "content": self.body.messages[-1].content},
                {"role": "assistant", "content": reply.content},
            ],
            model=self.llm_request.model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            summary_covered=self.context.covered,
            calibration=learn_calibration(messages, reply.prompt_tokens),
        )


def check_limits(body: ChatRequest, settings: ChatSettings) -> None:
    if not body.persona and not body.character_id:
        raise ValidationFailed("persona: give a persona or a character_id")
    if len(body.messages) > settings.max_messages:
        raise ValidationFailed(f"messages: at most {settings.max_messages} messages are allowed")
    for index, message in enumerate(body.messages):
        if len(message.content) > settings.max_message_chars:
            raise ValidationFailed(
                f"messages.{index}.content: at most {settings.max_message_chars} characters"
            )
    if sum(len(m.content) for m in body.messages) > settings.max_total_chars:
        raise ValidationFailed(
            f"messages: at most {settings.max_total_chars} characters in all are allowed"
        )


def check_room(request: LlmRequest, estimate: TokenEstimator) -> None:
    """The system message, the new message and the reply must fit the window at all: no
    summary can make room for them."""
    needed = estimate.messages([request.messages[0], request.messages[-1]]) + request.max_tokens
    if needed > request.context_tokens:
        raise ValidationFailed(
            f"max_tokens: the persona, the last message and max_tokens ({request.max_tokens}) "
            f"need about {needed} tokens, more than the model's context window of "
            f"{request.context_tokens}"
        )


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
