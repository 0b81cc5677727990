"""The language model server: Ollama or an OpenAI-compatible server (vLLM) behind one client
interface (`make_llm_client` picks one by `LLM_SERVICE`), the model catalog, each model's
context window, and the health check."""

import httpx

from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest
from avatar_chat.llm.ollama import OllamaClient
from avatar_chat.llm.openai_compat import OpenAICompatClient
from avatar_chat.settings import ChatSettings

__all__ = ["LlmClient", "LlmReply", "LlmRequest", "make_llm_client", "open_llm_http"]


def open_llm_http(settings: ChatSettings) -> httpx.AsyncClient:
    """One pooled client per process for every LLM call."""
    timeout = httpx.Timeout(
        connect=settings.llm_connect_timeout_s,
        read=settings.llm_read_timeout_s,
        write=settings.llm_read_timeout_s,
        pool=settings.llm_connect_timeout_s,
    )
    return httpx.AsyncClient(timeout=timeout, trust_env=False)


def make_llm_client(settings: ChatSettings, http: httpx.AsyncClient) -> LlmClient:
    if settings.llm_service == "vllm":
        return OpenAICompatClient(http, settings)
    return OllamaClient(http, settings)
