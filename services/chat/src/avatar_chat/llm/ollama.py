"""Ollama's native chat API: POST /api/chat (JSON, or NDJSON when streaming), GET /api/tags."""

from collections.abc import AsyncGenerator
from typing import Any

from avatar_chat.errors import LlmError
from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest
from avatar_chat.llm.wire import failed, json_object, malformed, positive_int, token_count


class OllamaClient(LlmClient):
    @property
    def _base(self) -> str:
        return self.settings.ollama_base_url.rstrip("/")

    def _payload(self, request: LlmRequest, stream: bool) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": request.messages,
            "stream": stream,
            "keep_alive": self.settings.llm_keep_alive,
            # num_ctx is sent explicitly: Ollama's default differs between versions, and it
            # silently drops the oldest messages past it.
            "options": {
                "temperature": request.temperature,
                "num_predict": request.max_tokens,
                "num_ctx": request.context_tokens,
            },
        }

    async def complete(self, request: LlmRequest) -> LlmReply:
        body = await self._post_json(
            f"{self._base}/api/chat", self._payload(request, stream=False), request.model
        )
        content = _content(body)
        if content is None:
            raise malformed("reply (no message content)")
        return LlmReply(
            content, token_count(body, "prompt_eval_count"), token_count(body, "eval_count")
        )

    async def stream(self, request: LlmRequest) -> AsyncGenerator[str | LlmReply, None]:
        parts: list[str] = []
        lines = self._stream_lines(
            f"{self._base}/api/chat", self._payload(request, stream=True), request.model
        )
        async for line in lines:
            chunk = json_object(line, "stream line")
            if "error" in chunk:  # Ollama reports failures mid-stream in-band, with status 200
                raise failed(chunk)
            text = _content(chunk)
            if text:
                parts.append(text)
                yield text
            if chunk.get("done"):
                prompt, completion = (
                    token_count(chunk, "prompt_eval_count"),
                    token_count(chunk, "eval_count"),
                )
                yield LlmReply("".join(parts), prompt, completion)
                return
        raise LlmError("The language model server ended the stream before it was done.")

    async def model_names(self) -> list[str]:
        models = await self._model_entries(f"{self._base}/api/tags", "models")
        return [_without_latest(m["name"]) for m in models if isinstance(m.get("name"), str)]

    async def trained_context(self, model: str) -> int | None:
        # /api/show reports the trained length as model_info["<architecture>.context_length"].
        body = await self._post_json(f"{self._base}/api/show", {"model": model}, model)
        info = body.get("model_info")
        if not isinstance(info, dict):
            return None
        return positive_int(info.get(f"{info.get('general.architecture')}.context_length"))


def _content(body: dict[str, Any]) -> str | None:
    message = body.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _without_latest(name: str) -> str:
    # Ollama lists "gemma3:latest" for a model pulled as "gemma3"; either name works in calls.
    return name.removesuffix(":latest")
