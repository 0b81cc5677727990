"""Token estimates for planning a prompt before the LLM has counted it.

The LLM's own count (`prompt_eval_count` / `usage.prompt_tokens`) is the truth for what was
sent. From it each session learns its characters per token, per model; before the first count
a conservative default is used: one token per Hangul or CJK character (what Korean costs in
common tokenizers, at worst) and one per three other characters (English costs about four).
"""

import re
from collections.abc import Sequence

# Chat templates wrap each message in role markers; a few tokens per message, at most.
MESSAGE_OVERHEAD_TOKENS = 4
# A learned ratio outside these bounds is a miscount (a server reporting only the uncached part
# of the prompt, say), not a property of the language.
MIN_CHARS_PER_TOKEN, MAX_CHARS_PER_TOKEN = 0.5, 6.0
_WIDE = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)


def default_tokens(text: str) -> int:
    wide = len(_WIDE.findall(text))
    return wide + -(-(len(text) - wide) // 3)


class TokenEstimator:
    def __init__(self, chars_per_token: float | None = None) -> None:
        self.chars_per_token = chars_per_token  # None: not learned yet

    def text(self, text: str) -> int:
        if self.chars_per_token is None:
            return default_tokens(text)
        return int(len(text) / self.chars_per_token) + 1

    def messages(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(self.text(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def learn_chars_per_token(messages: Sequence[dict[str, str]], counted: int) -> float | None:
    """Characters per token of a prompt the LLM counted as `counted` tokens; None when the
    count cannot be trusted (a server that reports none, or a partial one)."""
    text_tokens = counted - MESSAGE_OVERHEAD_TOKENS * len(messages)
    if counted <= 0 or text_tokens <= 0:
        return None
    ratio = sum(len(m["content"]) for m in messages) / text_tokens
    return ratio if MIN_CHARS_PER_TOKEN <= ratio <= MAX_CHARS_PER_TOKEN else None
