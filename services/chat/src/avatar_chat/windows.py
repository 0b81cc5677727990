"""The context window each model is planned with: `LLM_CONTEXT_TOKENS`, or the model's trained
length when the LLM server reports a smaller one (Ollama's /api/show, vLLM's max_model_len)."""

import asyncio
import logging
import time
from collections import OrderedDict

from avatar_chat.clients import LlmClient
from avatar_shared.errors import AppError

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
        # model -> (tokens, valid until), least recently asked first
        self._known: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def tokens(self, model: str) -> int:
        known = self._known.get(model)
        if known and time.monotonic() < known[1]:
            self._known.move_to_end(model)
            return known[0]
        valid_until = float("inf")  # a model's trained length does not change
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                trained = await self.llm.trained_context(model)
        except (AppError, TimeoutError) as exc:
            log.warning("context length of %s unknown, using %d: %s", model, self.configured, exc)
            trained, valid_until = None, time.monotonic() + self.retry_s
        tokens = min(self.configured, trained or self.configured)
        self._known[model] = (tokens, valid_until)
        self._known.move_to_end(model)
        if len(self._known) > MAX_MODELS:
            self._known.popitem(last=False)
        return tokens
