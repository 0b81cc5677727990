"""OpenAI-compatible servers such as vLLM: POST /v1/chat/completions (JSON, or SSE chunks
ending `data: [DONE]` when streaming), GET /v1/models. The base URL may carry a path prefix."""

from collections.abc import AsyncGenerator
from typing import Any

from avatar_chat.errors import LlmError
from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest
from avatar_chat.llm.wire import failed, json_object, malformed, positive_int, token_count


class OpenAICompatClient(LlmClient):
    @property
    def _base(self) -> str:
        return self.settings.vllm_base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        key = self.settings.vllm_api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, request: LlmRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        if stream:  # usage arrives in a last chunk only when asked for
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def complete(self, request: LlmRequest) -> LlmReply:
        body = await self._post_json(
            f"{self._base}/v1/chat/completions", self._payload(request, False), request.model
        )
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise malformed("reply") from exc
        if not isinstance(content, str):
            raise malformed("reply (no message content)")
        return _reply(content, body.get("usage"))

    async def stream(self, request: LlmRequest) -> AsyncGenerator[str | LlmReply, None]:
        parts: list[str] = []
        usage: object = None
        lines = self._stream_lines(
            f"{self._base}/v1/chat/completions", self._payload(request, True), request.model
        )
        async for line in lines:
            if not line.startswith("data:"):
                continue  # SSE comments and other fields carry nothing for us
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                yield _reply("".join(parts), usage)
                return
            chunk = json_object(data, "stream chunk")
            if "error" in chunk:
                raise failed(chunk)
            usage = chunk.get("usage") or usage  # the last chunk carries it, when asked for
            text = _delta_text(chunk)
            if text:
                parts.append(text)
                yield text
        raise LlmError("The language model server ended the stream before [DONE].")

    async def model_names(self) -> list[str]:
        models = await self._model_entries(f"{self._base}/v1/models", "data")
        return [m["id"] for m in models if isinstance(m.get("id"), str)]

    async def trained_context(self, model: str) -> int | None:
        # vLLM lists each model's max_model_len; other servers may not.
        body = await self._get_json(f"{self._base}/v1/models")
        models = body.get("data")
        for entry in models if isinstance(models, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model:
                return positive_int(entry.get("max_model_len"))
        return None


def _reply(content: str, usage: object) -> LlmReply:
    usage = {} if usage is None else usage  # a server that reports none: counts of 0
    if not isinstance(usage, dict):
        raise malformed("reply (usage)")
    return LlmReply(
        content, token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
    )


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""
