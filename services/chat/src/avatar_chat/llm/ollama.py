"""Ollama's native chat API: POST /api/chat (JSON, or NDJSON when streaming), GET /api/tags."""

from typing import Any

from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest, Sampling, StreamPiece
from avatar_chat.llm.wire import failed, json_object, malformed, positive_int, token_count


class OllamaClient(LlmClient):
    @property
    def _base(self) -> str:
        return self.settings.ollama_base_url.rstrip("/")

    @property
    def chat_url(self) -> str:
        return f"{self._base}/api/chat"

    def payload(self, request: LlmRequest, stream: bool) -> dict[str, Any]:
        structured = {} if request.schema is None else {"format": request.schema}
        return {
            **structured,  # docs/api.md, "Request (Structured outputs)"
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
                **_sampling_options(request.sampling),
            },
        }

    def parse_reply(self, body: dict[str, Any]) -> LlmReply:
        content = _content(body)
        if content is None:
            raise malformed("reply (no message content)")
        return LlmReply(content, *_counts(body))

    def parse_line(self, line: bytes) -> StreamPiece:
        chunk = json_object(line, "stream line")
        if "error" in chunk:  # Ollama reports failures mid-stream in-band, with status 200
            raise failed(chunk)
        done = bool(chunk.get("done"))
        return StreamPiece(_content(chunk) or "", _counts(chunk) if done else None, done)

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


def _sampling_options(sampling: Sampling) -> dict[str, Any]:
    """The generation controls given, under Ollama's option names (docs/api.md, "Generate
    request (With options)"): its repetition penalty is `repeat_penalty`."""
    options = {
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,  # 0 turns it off, as the request's 0 means
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repetition_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
    }
    return {name: value for name, value in options.items() if value is not None}


def _content(body: dict[str, Any]) -> str | None:
    message = body.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _counts(body: dict[str, Any]) -> tuple[int, int]:
    return token_count(body, "prompt_eval_count"), token_count(body, "eval_count")


def _without_latest(name: str) -> str:
    # Ollama lists "gemma3:latest" for a model pulled as "gemma3"; either name works in calls.
    return name.removesuffix(":latest")
