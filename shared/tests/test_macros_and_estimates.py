"""The shared macro expander (chat's prompts, the characters service's greetings) and the
default token estimate."""

from avatar_shared.macros import Macros
from avatar_shared.token_estimate import default_tokens


def test_macros_expand_whatever_their_case_and_leave_unknown_ones():
    macros = Macros(char="Aria", user="여행자")
    text = "{{char}} {{CHAR}} <BOT> <bot> {{user}} {{User}} <USER> {{time}} {{ char }}"
    assert macros.expand(text) == "Aria Aria Aria Aria 여행자 여행자 여행자 {{time}} {{ char }}"


def test_original_is_empty_unless_given():
    macros = Macros(char="A", user="U")
    assert macros.expand("[{{original}}]") == "[]"
    assert macros.with_original("rules").expand("{{original}} for {{char}}") == "rules for A"


def test_the_estimate_counts_wide_characters_one_each_and_others_by_three():
    assert default_tokens("") == 0
    assert default_tokens("abc") == 1 and default_tokens("abcd") == 2
    assert default_tokens("안녕하세요") == 5
    assert default_tokens("숲 forest") == 1 + 3  # 숲, then " forest" (7 characters)
