"""SillyTavern chat files (JSONL) to and from our stored messages: the fixtures are written in
the format SillyTavern 1.12 saves (see the module's docstring for where each fact comes from)."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from avatar_chat.conversations.sillytavern import (
    MAX_CONTAINERS,
    OPENING_GREETINGS,
    ImportLimits,
    export_jsonl,
    import_jsonl,
)
from avatar_shared.errors import ValidationFailed
from avatar_shared.timestamps import utc_now

DATA = Path(__file__).parent / "data"
LIMITS = ImportLimits(max_bytes=1_000_000, max_messages=100, max_message_chars=2000, max_swipes=8)
HEADER = {"user_name": "민준", "character_name": "Seraphina", "create_date": "2024-09-28@19h02m36s"}


def jsonl(*lines: object) -> bytes:
    """Lines as SillyTavern writes them (JSON.stringify's form); a string is a line as it is."""
    return "\n".join(
        line
        if isinstance(line, str)
        else json.dumps(line, ensure_ascii=False, separators=(",", ":"))
        for line in lines
    ).encode()


def user(mes: str = "안녕하세요", **fields: Any) -> dict[str, Any]:
    return {"name": "민준", "is_user": True, "is_system": False, "send_date": "May 1, 2025 9:15am",
            "mes": mes, "extra": {}, **fields}  # fmt: skip


def reply(mes: str = "반가워요", **fields: Any) -> dict[str, Any]:
    return {"name": "Seraphina", "is_user": False, "send_date": "May 1, 2025 9:16am",
            "mes": mes, "extra": {}, **fields}  # fmt: skip


def rerolled(count: int, shown: int) -> dict[str, Any]:
    texts = [f"take {i}" for i in range(count)]
    return reply(texts[shown], swipes=texts, swipe_id=shown)


def imported(*messages: dict[str, Any], limits: ImportLimits = LIMITS) -> list[dict[str, Any]]:
    return import_jsonl(jsonl(HEADER, *messages), limits).messages


def refusal(data: bytes, limits: ImportLimits = LIMITS) -> str:
    with pytest.raises(ValidationFailed) as caught:
        import_jsonl(data, limits)
    assert caught.value.status_code == 422
    return caught.value.message


# --- import ---------------------------------------------------------------------------------


def test_a_sillytavern_chat_imports_with_its_alternates_and_dates():
    chat = import_jsonl((DATA / "sillytavern_chat.jsonl").read_bytes(), LIMITS)

    assert (chat.user_name, chat.character_name) == ("민준", "Seraphina")
    assert chat.created_at == "2024-09-28T19:02:36.000Z"
    # The hidden user message (is_system) and the /sys narrator message are left out.
    assert [m["role"] for m in chat.messages] == [
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    greeting, question, answer, wish, magic = chat.messages

    # The card's greeting and its two alternates; the user had swiped to the second.
    assert greeting["swipe_id"] == 1
    assert [s["content"].split()[0] for s in greeting["swipes"]] == [
        "*오두막의",
        "*달빛",
        "*Seraphina",
    ]
    assert greeting["content"] == greeting["swipes"][1]["content"]
    assert greeting["content"].endswith("여긴 안전해요. 🌙")
    # Its swipe_info is [] (as getFirstMessage writes it): every alternate takes its date.
    assert {s["at"] for s in greeting["swipes"]} == {"2024-09-28T19:02:00.000Z"}

    assert question == {
        "id": question["id"],
        "role": "user",
        "content": "네… 숲에서 길을 잃었어요. 여기가 어디예요? 😅",
        "at": "2024-09-28T19:03:00.000Z",
    }
    # A reply never swiped has swipes [mes] in the file, no swipes of ours.
    assert "swipes" not in answer and "swipe_id" not in answer
    assert answer["content"].startswith("*그녀가 따뜻한 담요를 건넨다.*\n\n")
    assert wish["content"] == "고마워요! 혹시 마법을 쓸 수 있어요? ✨🔮"

    assert magic["swipe_id"] == 1
    assert [(s["content"].split()[0], s["at"]) for s in magic["swipes"]] == [
        ("*그녀가", "2024-09-28T19:08:00.000Z"),
        ("*손끝에서", "2024-09-28T19:09:00.000Z"),
        ("*Seraphina", "2024-09-28T19:10:00.000Z"),
    ]
    assert (magic["content"], magic["at"]) == (
        magic["swipes"][1]["content"],
        magic["swipes"][1]["at"],
    )

    ids = [m["id"] for m in chat.messages]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_an_older_chat_reads_its_server_and_unix_dates():
    chat = import_jsonl((DATA / "sillytavern_chat_2023.jsonl").read_bytes(), LIMITS)

    assert chat.created_at == "2023-06-05T14:56:50.682Z"
    assert [(m["role"], m["at"]) for m in chat.messages] == [
        ("assistant", "2023-06-05T14:46:50.682Z"),  # a number: Unix milliseconds
        ("user", "2023-06-05T14:47:50.000Z"),  # the same as digits
        ("assistant", "2023-06-05T14:58:03.005Z"),  # "@14h 58m 3s 05ms"
    ]
    assert chat.messages[2]["content"] == "Hey! Show some respect! 💧"
    assert all("swipes" not in m for m in chat.messages)


@pytest.mark.parametrize(
    ("send_date", "at"),
    [
        ("September 28, 2024 7:02pm", "2024-09-28T19:02:00.000Z"),
        ("December 6, 2026 12:05am", "2026-12-06T00:05:00.000Z"),
        ("December 6, 2026 12:05pm", "2026-12-06T12:05:00.000Z"),
        ("Sep 3, 2024 9:07AM", "2024-09-03T09:07:00.000Z"),  # moment reads short names too
        ("2024-7-12@01h31m37s", "2024-07-12T01:31:37.000Z"),
        ("2024-07-12@01h31m37s123ms", "2024-07-12T01:31:37.123Z"),
        ("2024-6-5 @14h 56m 50s 682ms", "2024-06-05T14:56:50.682Z"),
        ("2024-09-28T10:04:11.482Z", "2024-09-28T10:04:11.482Z"),
        ("2024-09-28T19:04:11+09:00", "2024-09-28T10:04:11.000Z"),
        (1727517756123, "2024-09-28T10:02:36.123Z"),
    ],
)
def test_every_date_form_sillytavern_wrote_is_read(send_date, at):
    assert imported(user(send_date=send_date))[0]["at"] == at


@pytest.mark.parametrize("send_date", [None, "yesterday", "February 30, 2024 1:00pm", -5, True])
def test_a_date_that_cannot_be_read_becomes_the_import_time(send_date):
    before = utc_now()
    at = imported(user(send_date=send_date))[0]["at"]
    assert before <= at <= utc_now()


def test_an_unreadable_create_date_is_none():
    header = {**HEADER, "create_date": "someday"}
    assert import_jsonl(jsonl(header, user()), LIMITS).created_at is None


def test_the_shown_text_is_mes_even_when_its_swipe_differs():
    """What ST shows is `mes`; a file edited by hand may disagree with swipes[swipe_id]."""
    [message] = imported(reply("the edited one", swipes=["first", "second"], swipe_id=1))
    assert message["content"] == "the edited one"
    assert [s["content"] for s in message["swipes"]] == ["first", "the edited one"]


def test_alternates_take_their_own_dates_and_interruptions_from_swipe_info():
    info = [
        {"send_date": "May 1, 2025 9:20am", "extra": {"interrupted": True}},
        None,  # a hole, as JSON.stringify writes a sparse array's
    ]
    line = reply("b", swipes=["a", "b", "c"], swipe_id=1, swipe_info=info)
    [message] = imported(line)
    assert message["swipes"] == [
        {"content": "a", "at": "2025-05-01T09:20:00.000Z", "interrupted": True},
        {"content": "b", "at": "2025-05-01T09:16:00.000Z"},
        {"content": "c", "at": "2025-05-01T09:16:00.000Z"},
    ]
    assert "interrupted" not in message


@pytest.mark.parametrize(
    ("count", "shown", "kept", "swipe_id"),
    [
        (12, 0, ["take 0", "take 9", "take 10", "take 11"], 0),
        (12, 5, ["take 5", "take 9", "take 10", "take 11"], 0),
        (12, 11, ["take 8", "take 9", "take 10", "take 11"], 3),
        (4, 2, ["take 0", "take 1", "take 2", "take 3"], 2),
    ],
)
def test_past_max_swipes_a_reply_keeps_the_shown_and_the_newest(count, shown, kept, swipe_id):
    limits = ImportLimits(**{**LIMITS.__dict__, "max_swipes": 4})
    _, message = imported(user(), rerolled(count, shown), limits=limits)
    assert [s["content"] for s in message["swipes"]] == kept
    assert message["swipe_id"] == swipe_id
    assert message["content"] == f"take {shown}"


def test_alternates_past_those_kept_are_dropped_unread():
    """Only the alternates kept are read: a reply rerolled without end costs no more than one
    at max_swipes, and a broken old alternate (SillyTavern's import reads none of them) does
    not refuse the file it would have been dropped from."""
    limits = ImportLimits(**{**LIMITS.__dict__, "max_swipes": 4})
    line = rerolled(12, 11)
    line["swipes"][0:3] = [7, None, "\ud800"]
    line["swipe_info"] = [{"send_date": "May 1, 2025 9:00am"}, "not info", None]
    # JSON.stringify writes half a UTF-16 pair escaped, as json.dumps does by default.
    _, message = import_jsonl(jsonl(HEADER, user(), json.dumps(line)), limits).messages
    assert [s["content"] for s in message["swipes"]] == [f"take {i}" for i in range(8, 12)]
    assert message["swipe_id"] == 3
    opening = rerolled(OPENING_GREETINGS + 3, 0)
    opening["swipes"][1] = {"not": "text"}
    first, _ = imported(opening, user())
    assert len(first["swipes"]) == OPENING_GREETINGS
    assert "take 1" not in [s["content"] for s in first["swipes"]]
    kept_broken = rerolled(12, 0)
    kept_broken["swipes"][11] = 7  # the newest is kept: still read, still refused
    assert refusal(jsonl(HEADER, user(), kept_broken), limits) == (
        "Line 3: 'swipes[11]' must be a string."
    )


def test_a_file_of_countless_empty_lists_is_refused_before_it_is_parsed():
    """`[],[],...` in 2 MiB opens a million lists: a parse of seconds holding the GIL (every
    stream of the replica waits) and tens of MB; no chat opens that many."""
    data = jsonl(HEADER, user(), {**rerolled(2, 0), "swipe_info": [[]] * MAX_CONTAINERS})
    opened = data.count(b"[") + data.count(b"{")
    assert refusal(data) == (
        f"The chat file opens {opened} JSON lists and objects; at most {MAX_CONTAINERS} are taken."
    )
    # A long chat's are far from it: each line opens a few.
    limits = ImportLimits(**{**LIMITS.__dict__, "max_messages": 2000})
    long_chat = [message for _ in range(1000) for message in (user(), rerolled(3, 1))]
    assert len(import_jsonl(jsonl(HEADER, *long_chat), limits).messages) == 2000


def test_with_max_swipes_1_only_the_shown_text_is_kept():
    limits = ImportLimits(**{**LIMITS.__dict__, "max_swipes": 1})
    _, message = imported(user(), rerolled(3, 1), limits=limits)
    assert message["content"] == "take 1" and "swipes" not in message


def test_an_opening_keeps_every_greeting_of_its_card():
    """A chat's first reply is its opening: its alternates are the card's greetings (a first
    message and up to 20 alternate greetings), kept whole past max_swipes, as our export of
    such an opening writes them."""
    opening, later = rerolled(21, 20), rerolled(21, 20)
    first, _, second = imported(opening, user(), later)
    assert [s["content"] for s in first["swipes"]] == [f"take {i}" for i in range(21)]
    assert first["swipe_id"] == 20
    assert len(second["swipes"]) == LIMITS.max_swipes


def test_what_ours_does_not_use_is_skipped_or_left():
    [question] = imported(
        user(swipes=["x"], swipe_id=7),  # a user message has no alternates of ours
        {**user("an ST notice " * 1000), "is_system": True},  # skipped before any limit
    )
    assert question == {
        "id": question["id"],
        "role": "user",
        "content": "안녕하세요",
        "at": "2025-05-01T09:15:00.000Z",
    }


def test_blank_lines_crlf_and_a_bom_are_read():
    data = b"\xef\xbb\xbf" + jsonl(HEADER, user()).replace(b"\n", b"\r\n") + b"\r\n\n"
    assert [m["content"] for m in import_jsonl(data, LIMITS).messages] == ["안녕하세요"]


# --- refusals -------------------------------------------------------------------------------


def test_a_file_over_max_bytes_is_refused():
    data = jsonl(HEADER, user())
    limits = ImportLimits(**{**LIMITS.__dict__, "max_bytes": len(data) - 1})
    assert (
        refusal(data, limits)
        == f"The chat file is {len(data)} bytes; at most {len(data) - 1} are taken."
    )
    assert import_jsonl(data, ImportLimits(**{**LIMITS.__dict__, "max_bytes": len(data)}))


def test_a_file_not_utf8_is_refused_at_its_line():
    data = jsonl(HEADER, user(), user("caf\u00e9")).replace("é".encode(), b"\xe9")
    assert refusal(data) == "Line 3: the chat file is not UTF-8 text."


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([HEADER, user(), '{"name": "민준", "mes": '], "Line 3: the line is not valid JSON."),
        ([HEADER, "[" * 50_000 + "]" * 50_000], "Line 2: the line is not valid JSON."),
        ([HEADER, user(), ["a list"]], "Line 3: the line is not a JSON object."),
    ],
)
def test_a_line_that_is_not_a_json_object_is_refused(lines, says):
    assert refusal(jsonl(*lines)) == says


@pytest.mark.parametrize(
    "header",
    [
        user(),  # a file that starts with a message (SillyTavern's own import takes it)
        {"user_name": "민준"},
        {"user_name": "민준", "character_name": 7},
        {"user_name": None, "character_name": "Seraphina"},
    ],
)
def test_a_file_without_a_header_is_refused(header):
    message = refusal(jsonl(header, user()))
    assert message.startswith("Line 1: the first line must be a SillyTavern chat header")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (user(mes=None), "'mes' must be a string"),
        ({k: v for k, v in user().items() if k != "mes"}, "'mes' must be a string"),
        (user(mes=["text"]), "'mes' must be a string"),
        ({k: v for k, v in user().items() if k != "is_user"}, "'is_user' is missing"),
        (user(is_user="true"), "'is_user' must be true or false"),
        (user(is_system=0), "'is_system' must be true or false"),
        (user(extra=[]), "'extra' must be an object"),
        (reply(swipes="a"), "'swipes' must be a list of strings"),
        (reply(swipes=["a", 2], swipe_id=0), "'swipes[1]' must be a string"),
        (reply(swipes=["a"], swipe_id=0, swipe_info={}), "'swipe_info' must be a list"),
        # JSON.stringify writes half a UTF-16 pair escaped, as json.dumps does by default.
        (json.dumps(reply("ok \ud800")), "'mes' has a lone UTF-16 surrogate at character 3"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_with_its_line_and_name(line, says):
    assert refusal(jsonl(HEADER, user(), line)) == f"Line 3: {says}."


@pytest.mark.parametrize("swipe_id", [3, -1, None, "1", True, 1.5])
def test_a_swipe_id_outside_its_swipes_is_refused(swipe_id):
    line = reply("b", swipes=["a", "b", "c"], swipe_id=swipe_id)
    assert refusal(jsonl(HEADER, line)) == "Line 2: 'swipe_id' must be an integer from 0 to 2."


def test_too_long_a_user_message_is_refused_a_long_reply_is_taken():
    assert imported(user("가" * 2000))  # the limit itself is taken
    assert refusal(jsonl(HEADER, user("가" * 2001))) == (
        "Line 2: 'mes' is 2001 characters long; at most 2000 are taken."
    )
    # A reply may be longer (ours are, continued): the file's size bounds it.
    [long_reply] = imported(reply("b" * 5000, swipes=["a", "b" * 5000], swipe_id=1))
    assert long_reply["content"] == "b" * 5000 and len(long_reply["swipes"]) == 2


def test_too_many_messages_are_refused():
    limits = ImportLimits(**{**LIMITS.__dict__, "max_messages": 3})
    narrator = reply("*wind*", extra={"type": "narrator"})
    assert (
        len(imported(user(), narrator, reply(), user(), limits=limits)) == 3
    )  # skipped: not counted
    message = refusal(jsonl(HEADER, user(), reply(), user(), reply()), limits)
    assert message == "Line 5: the chat has more than 3 messages."


@pytest.mark.parametrize(
    "data",
    [b"", b"\n \n", jsonl(HEADER), jsonl(HEADER, {**user(), "is_system": True})],
)
def test_a_chat_without_messages_is_refused(data):
    assert refusal(data) in (
        "The chat file is empty.",
        "The chat file has no user or character messages to import.",
    )


# --- export ---------------------------------------------------------------------------------

STORED = [
    {"id": "a1", "role": "assistant", "content": "어서 와요 🌙", "at": "2026-12-06T00:05:09.120Z",
     "swipes": [{"content": "Welcome!", "at": "2026-12-06T00:05:09.120Z"},
                {"content": "어서 와요 🌙", "at": "2026-12-06T00:05:09.120Z"}],
     "swipe_id": 1},
    {"role": "user", "content": "안녕!\n반가워", "at": "2026-12-06T12:41:00.000Z"},  # old: no id
    {"id": "b2", "role": "assistant", "content": "Hel", "at": "2026-12-06T19:05:59.999Z",
     "interrupted": True},
]  # fmt: skip


def test_export_writes_what_sillytavern_saves():
    data = export_jsonl("민준", "Seraphina", "2026-12-06T00:04:58.731Z", STORED)

    assert not data.endswith(b"\n") and "🌙".encode() in data  # UTF-8 as is, nothing after
    assert data.split(b"\n")[1].startswith(b'{"name":"Seraphina","is_user":false,')  # no spaces
    header, greeting, hello, cut = (json.loads(line) for line in data.split(b"\n"))
    assert header == {
        "user_name": "민준",
        "character_name": "Seraphina",
        "create_date": "2026-12-06@00h04m58s",
        "chat_metadata": {},
    }
    assert greeting == {
        "name": "Seraphina",
        "is_user": False,
        "is_system": False,
        "send_date": "December 6, 2026 12:05am",
        "mes": "어서 와요 🌙",
        "extra": {},
        "swipe_id": 1,
        "swipes": ["Welcome!", "어서 와요 🌙"],
        "swipe_info": [{"send_date": "December 6, 2026 12:05am", "extra": {}}] * 2,
    }
    assert hello == {
        "name": "민준",
        "is_user": True,
        "is_system": False,
        "send_date": "December 6, 2026 12:41pm",
        "mes": "안녕!\n반가워",
        "extra": {},
    }
    # One alternate is still swipes [mes]; the cut reply says so in extra.
    assert (cut["send_date"], cut["swipe_id"], cut["swipes"]) == (
        "December 6, 2026 7:05pm",
        0,
        ["Hel"],
    )
    assert cut["extra"] == {"interrupted": True}
    assert cut["swipe_info"] == [
        {"send_date": "December 6, 2026 7:05pm", "extra": {"interrupted": True}}
    ]


def test_export_then_import_keeps_roles_texts_and_alternates():
    def shape(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (m["role"], m["content"], m.get("interrupted", False), m.get("swipe_id"),
             [(s["content"], s.get("interrupted", False)) for s in m.get("swipes", [])])
            for m in messages
        ]  # fmt: skip

    chat = import_jsonl((DATA / "sillytavern_chat.jsonl").read_bytes(), LIMITS)
    again = import_jsonl(
        export_jsonl(
            chat.user_name, chat.character_name, chat.created_at or utc_now(), chat.messages
        ),
        LIMITS,
    )
    assert shape(again.messages) == shape(chat.messages)
    assert [m["at"] for m in again.messages] == [m["at"] for m in chat.messages]  # to the minute
    assert (again.user_name, again.character_name) == ("민준", "Seraphina")
    assert again.created_at == "2024-09-28T19:02:36.000Z"

    # A cut reply, and a reply with a cut alternate.
    first, shown = STORED[0]["swipes"]
    cut = [STORED[2], {**STORED[0], "swipes": [{**first, "interrupted": True}, shown]}]
    back = import_jsonl(export_jsonl("민준", "Seraphina", "2026-12-06T00:04:58.731Z", cut), LIMITS)
    assert shape(back.messages) == shape(cut)
    assert back.messages[0]["at"] == "2026-12-06T19:05:00.000Z"  # ST's dates end at the minute


def test_export_dates_are_written_in_utc():
    at = datetime(2026, 12, 6, 9, 5, tzinfo=UTC).isoformat()  # "+00:00" rather than "Z"
    message = {"role": "user", "content": "x", "at": at}
    line = json.loads(
        export_jsonl("a", "b", "2026-12-06T18:05:00+09:00", [message]).split(b"\n")[1]
    )
    assert line["send_date"] == "December 6, 2026 9:05am"
    header = json.loads(export_jsonl("a", "b", "2026-12-06T18:05:00+09:00", []).split(b"\n")[0])
    assert header["create_date"] == "2026-12-06@09h05m00s"
