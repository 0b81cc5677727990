"""Structured outputs shared by the LLM emulators: scripted items, schema answers, JSON mode."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from avatar_emulators.replies import make_reply, split_reply
from avatar_emulators.structured import (
    JsonOutput,
    SchemaError,
    check_schema,
    scripted_items,
    structured_content,
)

REPLY = "The ordinary reply text."
# What the chat service will ask for: prose plus the new facts (pydantic-style, with $defs).
MEMORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "facts": {"type": "array", "items": {"$ref": "#/$defs/Fact"}},
    },
    "required": ["summary", "facts"],
    "$defs": {
        "Fact": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "kind": {"type": "string", "enum": ["preference", "event"]},
                "weight": {"type": "number"},
                "times": {"type": "integer"},
                "sure": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "source": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "extra": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
            "required": ["text", "kind"],
        }
    },
}


def answer(schema: dict[str, Any] | None, user_text: str) -> Any:
    return json.loads(structured_content(JsonOutput(schema), REPLY, user_text))


def test_scripted_items_in_order_identical_ones_once() -> None:
    text = (
        "[[a=1; b = two words ]] then [[a=1;b=two words]] and [[eq=x=y; br=a]b]] "
        "[[no pairs here]] [[a=first; a=last]]"
    )

    assert scripted_items(text) == [
        {"a": "1", "b": "two words"},
        {"eq": "x=y", "br": "a]b"},
        {"a": "last"},
    ]
    assert scripted_items("no items at all [[]]") == []


def test_schema_answer_validates_with_typed_values_and_defaults() -> None:
    text = (
        "Remember [[text=likes green tea; kind=preference; weight=0.5; times=3; sure=true]] "
        "and [[text=born in Oslo; kind=event; tags=travel]]"
    )
    value = answer(MEMORY_SCHEMA, text)

    jsonschema.validate(value, MEMORY_SCHEMA)
    assert value["summary"] == REPLY
    first, second = value["facts"]
    assert first == {
        "text": "likes green tea",
        "kind": "preference",
        "weight": 0.5,
        "times": 3,
        "sure": True,
        "tags": [],
        "source": "",
        "extra": {"n": 0},
    }
    assert second["kind"] == "event" and second["tags"] == ["travel"]
    assert (second["weight"], second["times"], second["sure"]) == (0, 0, False)


def test_missing_enum_takes_the_first_value_and_a_bad_value_is_sent_as_given() -> None:
    value = answer(MEMORY_SCHEMA, "[[text=a]] [[text=b; kind=rumour; times=many]]")

    assert value["facts"][0]["kind"] == "preference"
    # A model may misbehave: the values are as scripted, and the answer no longer validates.
    assert value["facts"][1]["kind"] == "rumour" and value["facts"][1]["times"] == "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, MEMORY_SCHEMA)


def test_no_items_give_empty_arrays_and_bounds_are_kept() -> None:
    bounded = {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}

    assert answer(MEMORY_SCHEMA, "nothing scripted") == {"summary": REPLY, "facts": []}
    assert answer(bounded, "") == ["", ""]
    assert answer(bounded, "[[x=a]] [[x=b; y=c]] [[x=c]] [[x=d]]") == ["a", "b", "c"]


def test_top_level_scalars_and_nested_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mood": {"type": "string", "enum": ["calm", "angry"]},
            "count": {"type": "integer"},
            "memory": {
                "type": "object",
                "properties": {
                    "note": {"type": "string"},
                    "ids": {"type": "array", "items": {"type": "integer"}},
                },
            },
            "version": {"const": 2},
        },
    }
    value = answer(schema, "[[id=7]] [[id=9]]")

    jsonschema.validate(value, schema)
    assert value == {
        "mood": "calm",
        "count": 0,
        "memory": {"note": REPLY, "ids": [7, 9]},
        "version": 2,
    }


def test_a_recursive_schema_is_answered() -> None:
    tree = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "parent": {"$ref": "#"},
        },
        "required": ["name"],
    }
    value = answer(tree, "[[name=leaf]]")

    jsonschema.validate(value, tree)
    assert value["children"][0]["name"] == "leaf"


def test_json_mode_is_the_reply_plus_the_items() -> None:
    assert answer(None, "plain") == {"content": REPLY}
    assert answer(None, "[[fact=tea]] [[fact=tea]] [[fact=Oslo; when=1990]]") == {
        "content": REPLY,
        "items": [{"fact": "tea"}, {"fact": "Oslo", "when": "1990"}],
    }


def test_tokens_rejoin_to_the_same_json_even_with_odd_whitespace() -> None:
    text = "[[text=two  spaces\u00a0and a no-break space; kind=event]]"
    content = structured_content(JsonOutput(MEMORY_SCHEMA), REPLY, text)
    rejoined = "".join(split_reply(content))

    assert rejoined == content
    assert json.loads(rejoined)["facts"][0]["text"] == "two  spaces\u00a0and a no-break space"
    assert "Grüße" in structured_content(JsonOutput(None), "Grüße", "")  # ensure_ascii=False


def test_make_reply_builds_json_around_the_ordinary_reply() -> None:
    messages = [
        {"role": "user", "content": "[[text=old]]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Remember [[text=new]]"},
    ]
    plain = make_reply(messages, "m", None)
    value = json.loads(make_reply(messages, "m", None, output=JsonOutput(MEMORY_SCHEMA)))

    assert value["summary"] == plain
    assert [f["text"] for f in value["facts"]] == ["new"]  # only the LAST user message counts


@pytest.mark.parametrize(
    "schema",
    [
        "not an object",
        {"type": "objekt"},
        {"type": "object", "properties": ["a"]},
        {"type": "array", "items": 5},
        {"enum": []},
        {"required": "a"},
        {"anyOf": []},
        {"type": "array", "maxItems": -1},
        {"$ref": "#/$defs/Missing"},
        {"$ref": "https://example.com/schema.json"},
        {"$ref": ["#"]},
    ],
)
def test_malformed_schemas_are_refused(schema: Any) -> None:
    with pytest.raises(SchemaError):
        check_schema(schema)


def test_a_schema_without_finite_answer_is_refused_when_answering() -> None:
    endless = {"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}

    check_schema(endless)  # well-formed
    with pytest.raises(SchemaError):
        structured_content(JsonOutput(endless), REPLY, "")
