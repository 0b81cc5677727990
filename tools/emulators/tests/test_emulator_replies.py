"""The shared token rule and context fitting that both LLM emulators rely on."""

from __future__ import annotations

from avatar_emulators.replies import (
    MESSAGE_OVERHEAD_TOKENS,
    build_reply,
    count_prompt_tokens,
    count_tokens,
    cut_at_stop,
    fit_to_context,
    parse_stop,
    split_reply,
)


def test_token_rule_counts_words_plus_overhead_per_message() -> None:
    messages = [{"role": "system", "content": "Be  brief."}, {"role": "user", "content": "a b c"}]

    assert count_tokens("  one two\nthree\tfour ") == 4
    assert count_tokens("") == 0
    assert count_prompt_tokens(messages) == 5 + 2 * MESSAGE_OVERHEAD_TOKENS


def test_fit_keeps_system_and_last_message_even_when_too_long() -> None:
    messages = [
        {"role": "system", "content": "rules " * 50},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": "last " * 50},
    ]

    kept, dropped = fit_to_context(messages, num_ctx=10)

    assert dropped == 2
    assert kept == [messages[0], messages[-1]]


def test_reply_tokens_rebuild_the_reply() -> None:
    reply = build_reply([{"role": "user", "content": "hello   world"}], "m", None)

    assert "".join(split_reply(reply)) == reply
    assert len(split_reply(reply)) == count_tokens(reply)
    assert "hello world" in reply


def test_reply_is_cut_before_the_earliest_stop_sequence() -> None:
    assert cut_at_stop("one two three two", ["three", "two"]) == ("one ", "two")
    assert cut_at_stop("one two", ["four"]) == ("one two", None)
    assert cut_at_stop("one two", []) == ("one two", None)


def test_stop_is_a_string_or_strings() -> None:
    assert parse_stop(None) == []
    assert parse_stop("User:") == ["User:"]
    assert parse_stop(["a", "", "b"]) == ["a", "b"]
    for bad in (3, ["a", 1], {"a": 1}):
        try:
            parse_stop(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")
