"""Token estimates for planning a prompt before the LLM has counted it.

The LLM's own count (`prompt_eval_count` / `usage.prompt_tokens`) is the truth for what was
sent. The default estimate is conservative and depends on the script: one token per Hangul or
CJK character (what Korean costs in common tokenizers, at worst) and one per three other
characters (English costs about four). From each count a session learns, per model, how the
model's tokenizer compares with that default, its calibration; the estimate stays
script-aware, so a prompt of English role-play rules cannot teach it to undercount Korean.
"""

from collections.abc import Sequence

from avatar_shared.token_estimate import default_tokens

# Chat templates wrap each message in role markers; a few tokens per message, at most.
MESSAGE_OVERHEAD_TOKENS = 4
# A calibration outside these bounds is a miscount, not a tokenizer: a server that reports
# only the uncached part of the prompt, say. No tokenizer is cheaper than a quarter of the
# default or dearer than twice it.
MIN_CALIBRATION, MAX_CALIBRATION = 0.25, 2.0
__all__ = ["MESSAGE_OVERHEAD_TOKENS", "TokenEstimator", "default_tokens", "learn_calibration"]


class TokenEstimator:
    def __init__(self, calibration: float | None = None) -> None:
        self.calibration = calibration or 1.0  # None: nothing learned yet, the default

    def text(self, text: str) -> int:
        return int(default_tokens(text) * self.calibration) + 1

    def messages(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(self.text(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def learn_calibration(messages: Sequence[dict[str, str]], counted: int) -> float | None:
    """How the LLM's count of a prompt compares with the default estimate of it; None when
    the count cannot be trusted (none reported, or far outside what a tokenizer does)."""
    text_tokens = counted - MESSAGE_OVERHEAD_TOKENS * len(messages)
    estimated = sum(default_tokens(m["content"]) for m in messages)
    if text_tokens <= 0 or estimated <= 0:
        return None
    ratio = text_tokens / estimated
    return ratio if MIN_CALIBRATION <= ratio <= MAX_CALIBRATION else None
