"""The context window each model is planned with: `LLM_CONTEXT_TOKENS`, or the model's trained
length when the LLM server reports a smaller one (Ollama's /api/show, vLLM's max_model_len)."""

import asyncio
import logging

from avatar_chat.llm.base import LlmClient
from avatar_shared.errors import AppError
from avatar_shared.ttl_cache import KeyedTtlCache

log = logging.getLogger(__name__)

# The lookup is a side question: it must not hold a chat request for long.
LOOKUP_TIMEOUT_S = 5.0
# Clients name models freely: the cache must not grow with every name tried.
MAX_MODELS = 64


class ContextWindows:
    def __init__(self, llm: LlmClient, configured: int, retry_s: float) -> None:
        self.llm = llm
        self.configured = configured
        self.retry_s = retry_s  # a failed lookup is retried after this long
        self._known: KeyedTtlCache[str, int] = KeyedTtlCache(MAX_MODELS)

    async def tokens(self, model: str) -> int:
        return await self._known.get(model, lambda: self._lookup(model))

    async def _lookup(self, model: str) -> tuple[int, float]:
        """The window and how long it holds: for good, as a trained length does not change."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                trained = await self.llm.trained_context(model)
        except (AppError, TimeoutError) as exc:
            log.warning("context length of %s unknown, using %d: %s", model, self.configured, exc)
            return self.configured, self.retry_s
        return min(self.configured, trained or self.configured), float("inf")
