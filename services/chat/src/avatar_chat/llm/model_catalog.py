"""The model list of `GET /api/chat/models`, from the LLM server, cached briefly."""

import re

from avatar_chat.llm.base import LlmClient
from avatar_chat.schemas import ModelInfo
from avatar_shared.ttl_cache import TtlCache


def display_name(model_id: str) -> str:
    """`gemma-3-27b-it` -> `Gemma 3 27B IT`: short words and sizes upper-cased."""
    words = re.split(r"[-_:/\s]+", model_id)
    return " ".join(
        w.upper() if len(w) <= 2 or re.fullmatch(r"[\d.]+[bmk]", w, re.I) else w.capitalize()
        for w in words
        if w
    )


def catalog(names: list[str], default_model: str) -> list[ModelInfo]:
    """The default first and marked (when the server has it), then the rest in its order."""
    ordered = sorted(dict.fromkeys(names), key=lambda name: name != default_model)
    return [
        ModelInfo(id=n, name=display_name(n) + (" (Default)" if n == default_model else ""))
        for n in ordered
    ]


class ModelCatalog:
    def __init__(self, llm: LlmClient, default_model: str, ttl_s: float) -> None:
        self.llm = llm
        self.default_model = default_model
        self.ttl_s = ttl_s
        self._models = TtlCache(self._fetch)

    async def models(self) -> list[ModelInfo]:
        return await self._models.get()

    async def _fetch(self) -> tuple[list[ModelInfo], float]:
        return catalog(await self.llm.model_names(), self.default_model), self.ttl_s
