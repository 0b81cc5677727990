"""The models clients may choose: those the LLM server has (cached briefly), narrowed to
OFFERED_MODELS when it is set. The list of `GET /api/chat/models`, and the check every chat
request's `model` passes before anything is asked of the LLM."""

import re

from avatar_chat.errors import ModelNotFound
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
    def __init__(self, llm: LlmClient, default_model: str, offered: str, ttl_s: float) -> None:
        self.llm = llm
        self.default_model = default_model
        names = {name.strip() for name in offered.split(",") if name.strip()}
        self.offered = names | {default_model} if names else None  # None: all the server has
        self.ttl_s = ttl_s
        self._models = TtlCache(self._fetch)

    async def models(self) -> list[ModelInfo]:
        return (await self._models.get())[0]

    async def require(self, model: str) -> str:
        """`model` when clients may choose it, else 404 model_not_found."""
        if _untagged(model) not in (await self._models.get())[1]:
            raise ModelNotFound(model)
        return model

    async def _fetch(self) -> tuple[tuple[list[ModelInfo], frozenset[str]], float]:
        """The list, and the names it accepts (made once per refresh, not per request)."""
        names = await self.llm.model_names()
        if self.offered is not None:
            names = [name for name in names if name in self.offered]
        models = catalog(names, self.default_model)
        return (models, frozenset(_untagged(m.id) for m in models)), self.ttl_s


def _untagged(model: str) -> str:
    # Ollama reads a name without a tag as `:latest` (and ollama.py lists it without).
    return model.removesuffix(":latest")
