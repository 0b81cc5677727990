"""The language model server: Ollama or an OpenAI-compatible server (vLLM) behind one client
interface (`make_llm_client` picks one by `LLM_SERVICE`), the model catalog, each model's
context window, and the health check."""

import aiohttp

from avatar_chat.llm.base import LlmClient, LlmReply, LlmRequest, Sampling, open_llm_http
from avatar_chat.llm.ollama import OllamaClient
from avatar_chat.llm.openai_compat import OpenAICompatClient
from avatar_chat.settings import ChatSettings

__all__ = ["LlmClient", "LlmReply", "LlmRequest", "Sampling", "make_llm_client", "open_llm_http"]


def make_llm_client(settings: ChatSettings, http: aiohttp.ClientSession) -> LlmClient:
    if settings.llm_service == "vllm":
        return OpenAICompatClient(http, settings)
    return OllamaClient(http, settings)
