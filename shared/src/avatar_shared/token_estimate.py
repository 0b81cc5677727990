"""A token estimate of a text without a tokenizer, for what is planned or shown before an
LLM counts it (chat's prompt planning, the characters service's lorebook test).

Conservative and script-aware: one token per Hangul or CJK character (what Korean costs in
common tokenizers, at worst) and one per three other characters (English costs about four).
"""

import re

WIDE = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)


def default_tokens(text: str) -> int:
    wide = len(WIDE.findall(text))
    return wide + -(-(len(text) - wide) // 3)
