"""OpenAI-compatible servers such as vLLM: POST /v1/chat/completions (JSON, or SSE chunks
ending `data: [DONE]` when streaming), GET /v1/models. The base URL may carry a path prefix."""

from typing import Any

from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest, Sampling, StreamPiece
from avatar_chat.llm.wire import failed, json_object, malformed, positive_int, token_count


class OpenAICompatClient(LlmClient):
    unfinished = "The language model server ended the stream before [DONE]."

    @property
    def _base(self) -> str:
        return self.settings.vllm_base_url.rstrip("/")

    @property
    def chat_url(self) -> str:
        return f"{self._base}/v1/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = self.settings.vllm_api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def payload(self, request: LlmRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": stream,
            **_sampling_fields(request.sampling),
        }
        if stream:  # usage arrives in a last chunk only when asked for
            payload["stream_options"] = {"include_usage": True}
        if request.schema is not None:  # structured outputs, as OpenAI's API names them
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.schema, "strict": True},
            }
        if request.continues:  # vLLM's chat template extensions (its protocol.py)
            payload["continue_final_message"], payload["add_generation_prompt"] = True, False
        return payload

    def parse_reply(self, body: dict[str, Any]) -> LlmReply:
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise malformed("reply") from exc
        if not isinstance(content, str):
            raise malformed("reply (no message content)")
        return LlmReply(content, *_counts(body.get("usage")))

    def parse_line(self, line: bytes) -> StreamPiece:
        if not line.startswith(b"data:"):
            return StreamPiece()  # SSE comments and other fields carry nothing for us
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            return StreamPiece(done=True)
        chunk = json_object(data, "stream chunk")
        if "error" in chunk:
            raise failed(chunk)
        usage = chunk.get("usage")  # the last chunk carries it, when asked for
        return StreamPiece(_delta_text(chunk), _counts(usage) if usage else None)

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


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """The generation controls given: OpenAI's own fields, and vLLM's extra sampling
    parameters `top_k`, `min_p`, `repetition_penalty` (a server without them may refuse them;
    they are sent only when the request sets them)."""
    fields = {
        "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        # Off is -1 for every vLLM; 0 only for the newer ones (older ones refuse 0).
        "top_k": -1 if sampling.top_k == 0 else sampling.top_k,
        "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _counts(usage: object) -> tuple[int, int]:
    usage = {} if usage is None else usage  # a server that reports none: counts of 0
    if not isinstance(usage, dict):
        raise malformed("reply (usage)")
    return token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""
