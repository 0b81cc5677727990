"""Our stored messages to and from SillyTavern's chat files (JSON Lines).

What SillyTavern writes and reads (its source, release 1.12.6):
- A chat file is one `JSON.stringify` per line (no spaces, non-ASCII as is), joined by "\\n",
  none after the last (`/save` in src/endpoints/chats.js). `/get` splits on "\\n" and drops the
  lines that do not parse; `/import` takes a .jsonl whose first line has `user_name` (or
  `name`) as it is.
- Line 1, the header (saveChat, public/script.js): `user_name`, `character_name`,
  `create_date` (humanizedDateTime(), public/scripts/RossAscends-mods.js:
  "2024-09-28@19h02m36s") and `chat_metadata` (author's note, variables, world info timers).
- Then a line per message: `name`, `is_user`, `is_system`, `send_date`, `mes` (the text shown)
  and `extra` (`api`, `model`, `token_count`, `bias`, `type`, ...: ST deep-copies it and saves
  it whole, keys it does not know included). A reply (saveReply, public/script.js) has no
  `is_system` but `gen_started`/`gen_finished` (ISO, from Date objects), `swipes` (every
  alternate's text, `swipes[swipe_id] == mes`, `[mes]` for a lone reply), `swipe_id` and
  `swipe_info` (per alternate `send_date`, `gen_*`, `extra`; it may be shorter, or have null
  holes: the greeting with the card's alternate greetings gets `[]`, getFirstMessage).
  User messages never have swipes.
- `is_system: true` marks what stays out of the prompt: ST's notices and the messages a user
  hid (/hide). The narrator's (/sys, sendNarratorMessage in public/scripts/slash-commands.js)
  have `is_user: false` and `extra.type: "narrator"`.
- `send_date` is getMessageTimeStamp() (RossAscends-mods.js), "September 28, 2024 7:02pm";
  older files hold Unix milliseconds (a number or digits) or the server's
  humanizedISO8601DateTime() (src/util.js), "2024-9-28 @19h 02m 36s 05ms".
  parseTimestamp (public/scripts/utils.js) reads these, later releases ISO 8601 and
  "2024-07-12@01h31m37s123ms" too. Its date strings are the writer's local time, no zone.

Our rules:
- Export writes what saveChat writes (empty `chat_metadata` and `extra`), dates in UTC, the
  only zone we know. Our `interrupted` goes to `extra.interrupted` (an alternate's to its
  `swipe_info[i].extra`): ST ignores it and keeps it, so a chat back from ST still has it.
- Import reads every date form above, the strings as UTC (a chat saved in Seoul comes 9 hours
  late). A date it cannot read becomes the import time (`created_at`: None): dates never
  refuse a file. Refused (ValidationFailed, naming the line
  and field): a file over max_bytes, not UTF-8 (a BOM is fine), a line that is not a JSON
  object (blank lines are skipped, as ST does), a first line without string `user_name` and
  `character_name`, a read field of the wrong type (`mes` and `swipes` strings, `is_user`
  and `is_system` booleans, `extra` an object, `swipe_info` a list), a user's message over
  max_message_chars (the character's replies are as long as the file and the conversation's
  caps allow: ours can be longer, continued), a text with half a UTF-16 pair alone, a
  `swipe_id` outside `swipes`
  (clamping would show a text the user did not choose), more than max_messages messages,
  or none at all (nothing to continue).
- Skipped: `is_system` and narrator messages (no role of ours fits, and ST leaves them out
  of the prompt too), and swipes on a user message. The shown text is `mes`, as in ST.
- Past max_swipes alternates, a reply keeps the shown one and the newest others (ST adds new
  ones at the end): a chat rerolled many times still imports, minus its oldest rejects,
  which are dropped unread (ST's own import checks none: one broken refuses nothing). A
  chat's first message, when the character's, is its opening: its alternates are the card's
  greetings (ST swipes through them there rather than generate), and it keeps up to
  OPENING_GREETINGS of them, as many as an opening of ours holds.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from avatar_chat.conversations.ids import new_message_id
from avatar_shared.errors import ValidationFailed
from avatar_shared.timestamps import utc_now

# An opening's alternates: a card's first message and at most 20 alternate greetings (the
# characters service's MAX_GREETINGS), all of which an opening of ours holds
# (conversations.actions). An imported chat's opening keeps as many.
OPENING_GREETINGS = 21
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# ST reads month names through moment, which also takes the short ones ("Sep").
_MONTH_NUMBERS = {name.lower(): n for n, name in enumerate(MONTHS, 1)} | {
    name[:3].lower(): n for n, name in enumerate(MONTHS, 1)
}
_DIGITS = re.compile(r"\d+", re.ASCII)
# "September 28, 2024 7:02pm" (getMessageTimeStamp)
_MERIDIEM = re.compile(r"([a-z]+)\s(\d{1,2}),\s(\d{4})\s(\d{1,2}):(\d{1,2})(am|pm)", re.I | re.A)
# "2024-09-28@19h02m36s" and "2024-07-12@01h31m37s123ms" (humanizedDateTime),
# "2024-9-28 @19h 02m 36s 05ms" (the server's humanizedISO8601DateTime)
_HUMANIZED = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2}) ?@(\d{1,2})h ?(\d{1,2})m ?(\d{1,2})s(?: ?(\d{1,3})ms)?", re.A
)
_BOM = b"\xef\xbb\xbf"


# JSON lists and objects a chat file may open (brackets in its text count too): a long
# SillyTavern chat opens a few per message (its swipes, their dates and extras).
MAX_CONTAINERS = 100_000


@dataclass(frozen=True)
class ImportLimits:
    max_bytes: int
    max_messages: int
    max_message_chars: int  # a user's message
    max_swipes: int  # alternates kept per reply, at least 1

    def chars_of(self, is_user: bool) -> int | None:
        return self.max_message_chars if is_user else None


@dataclass(frozen=True)
class ChatFile:
    user_name: str
    character_name: str
    created_at: str | None  # the header's create_date, when readable
    messages: list[dict[str, Any]]  # our internal stored messages, with fresh ids


# --- export ---------------------------------------------------------------------------------


def export_jsonl(
    user_name: str, character_name: str, created_at: str, messages: list[dict[str, Any]]
) -> bytes:
    header = {
        "user_name": user_name,
        "character_name": character_name,
        "create_date": _utc(created_at).strftime("%Y-%m-%d@%Hh%Mm%Ss"),
        "chat_metadata": {},
    }
    lines = [header, *(_st_message(m, user_name, character_name) for m in messages)]
    return "\n".join(
        json.dumps(line, ensure_ascii=False, separators=(",", ":")) for line in lines
    ).encode()


def _st_message(message: dict[str, Any], user_name: str, character_name: str) -> dict[str, Any]:
    is_user = message["role"] == "user"
    line: dict[str, Any] = {
        "name": user_name if is_user else character_name,
        "is_user": is_user,
        "is_system": False,
        "send_date": _send_date(message["at"]),
        "mes": message["content"],
        "extra": _extra(message),
    }
    if not is_user:
        # A lone reply is its own only alternate (content, at, interrupted: the same keys).
        alternates = message.get("swipes") or [message]
        line["swipe_id"] = message.get("swipe_id", 0)
        line["swipes"] = [alternate["content"] for alternate in alternates]
        line["swipe_info"] = [
            {"send_date": _send_date(alternate["at"]), "extra": _extra(alternate)}
            for alternate in alternates
        ]
    return line


def _extra(part: dict[str, Any]) -> dict[str, Any]:
    return {"interrupted": True} if part.get("interrupted") else {}


def _send_date(at: str) -> str:
    """getMessageTimeStamp()'s form: "September 28, 2024 7:02pm"."""
    moment = _utc(at)
    half = "am" if moment.hour < 12 else "pm"
    return (
        f"{MONTHS[moment.month - 1]} {moment.day}, {moment.year} "
        f"{moment.hour % 12 or 12}:{moment.minute:02d}{half}"
    )


def _utc(at: str) -> datetime:
    return datetime.fromisoformat(at).astimezone(UTC)


# --- import ---------------------------------------------------------------------------------


def import_jsonl(data: bytes, limits: ImportLimits) -> ChatFile:
    if len(data) > limits.max_bytes:
        raise ValidationFailed(
            f"The chat file is {len(data)} bytes; at most {limits.max_bytes} are taken."
        )
    data = data.removeprefix(_BOM)  # Windows editors write one; it is no reason to refuse
    # Counted before parsing: a file of empty lists and objects (`[],[],...`) costs seconds
    # of a parse that holds the GIL, so every stream of this replica, and tens of MB.
    if (opened := data.count(b"[") + data.count(b"{")) > MAX_CONTAINERS:
        raise ValidationFailed(
            f"The chat file opens {opened} JSON lists and objects; at most {MAX_CONTAINERS} "
            "are taken."
        )
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        where = data.count(b"\n", 0, exc.start) + 1
        raise ValidationFailed(f"Line {where}: the chat file is not UTF-8 text.") from exc
    rows = [
        (number, _json_object(number, line))
        for number, line in enumerate(text.split("\n"), 1)
        if line.strip()
    ]
    if not rows:
        raise ValidationFailed("The chat file is empty.")
    number, header = rows[0]
    names = [header.get("user_name"), header.get("character_name")]
    if not all(isinstance(name, str) for name in names):
        raise _bad(
            number,
            "the first line must be a SillyTavern chat header, with 'user_name' and "
            "'character_name' (strings)",
        )
    for field in ("user_name", "character_name"):
        _text(number, header[field], field)

    now = utc_now()
    messages: list[dict[str, Any]] = []
    for number, line in rows[1:]:
        message = _our_message(number, line, limits, now, opening=not messages)
        if message is None:
            continue
        if len(messages) == limits.max_messages:
            raise _bad(number, f"the chat has more than {limits.max_messages} messages")
        messages.append(message)
    if not messages:
        raise ValidationFailed("The chat file has no user or character messages to import.")
    return ChatFile(
        user_name=header["user_name"],
        character_name=header["character_name"],
        created_at=_read_date(header.get("create_date")),
        messages=messages,
    )


def _json_object(number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise _bad(number, "the line is not valid JSON") from exc
    if not isinstance(value, dict):
        raise _bad(number, "the line is not a JSON object")
    return value


def _our_message(
    number: int, line: dict[str, Any], limits: ImportLimits, now: str, opening: bool
) -> dict[str, Any] | None:
    """The line as our stored message, or None for a line we skip; `opening`: it is the
    chat's first (a reply there holds the card's greetings)."""
    extra = line.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise _bad(number, "'extra' must be an object")
    for field in ("is_user", "is_system"):
        if not isinstance(line.get(field, False), bool):
            raise _bad(number, f"'{field}' must be true or false")
    if line.get("is_system") or (extra or {}).get("type") == "narrator":
        return None  # checked no further: ST's own notices (is_system) may be long
    if "is_user" not in line:
        raise _bad(number, "'is_user' is missing")

    message: dict[str, Any] = {
        "id": new_message_id(),
        "role": "user" if line["is_user"] else "assistant",
        "content": _text(number, line.get("mes"), "mes", limits.chars_of(line["is_user"])),
        "at": _read_date(line.get("send_date")) or now,
    }
    if line["is_user"]:
        return message
    if _interrupted(extra):
        message["interrupted"] = True
    kept = max(limits.max_swipes, OPENING_GREETINGS) if opening else limits.max_swipes
    alternates, shown = _alternates(number, line, kept, message)
    if len(alternates) > 1:
        message["swipes"], message["swipe_id"] = alternates, shown
    return message


def _alternates(
    number: int, line: dict[str, Any], kept: int, message: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """A reply's alternates in our form (at most `kept`), and the index of the shown one
    (the message)."""
    swipes = line.get("swipes")
    shown: dict[str, Any] = {
        key: message[key] for key in ("content", "at", "interrupted") if key in message
    }
    if swipes is None or swipes == []:
        return [shown], 0
    if not isinstance(swipes, list):
        raise _bad(number, "'swipes' must be a list of strings")
    swipe_id = line.get("swipe_id")
    if type(swipe_id) is not int or not 0 <= swipe_id < len(swipes):  # bool is no index either
        raise _bad(number, f"'swipe_id' must be an integer from 0 to {len(swipes) - 1}")
    info = line.get("swipe_info")
    if info is None:
        info = []
    if not isinstance(info, list):
        raise _bad(number, "'swipe_info' must be a list")

    # Only the alternates kept are read: those past them are dropped unread (a line may
    # hold hundreds of thousands in a file within max_bytes).
    picked = _kept(len(swipes), swipe_id, kept)
    alternates: list[dict[str, Any]] = []
    for index in picked:
        text = _text(number, swipes[index], f"swipes[{index}]")
        if index == swipe_id:  # what ST shows is `mes`, with its date and extra
            alternates.append(shown)
            continue
        # Info may be missing (a greeting's), or a null hole: then the message's date.
        details = info[index] if index < len(info) and isinstance(info[index], dict) else {}
        alternate = {"content": text, "at": _read_date(details.get("send_date")) or message["at"]}
        if _interrupted(details.get("extra")):
            alternate["interrupted"] = True
        alternates.append(alternate)
    return alternates, picked.index(swipe_id)


def _kept(count: int, shown: int, most: int) -> list[int]:
    """The indexes of the alternates kept of `count` (messages.newest's choice): the shown
    one and the newest others, at most `most` in all, in order."""
    newest = [index for index in range(max(count - most, 0), count) if index != shown]
    return sorted([shown, *newest[max(len(newest) - (most - 1), 0) :]])


def _interrupted(extra: object) -> bool:
    return isinstance(extra, dict) and extra.get("interrupted") is True


def _text(number: int, value: object, field: str, max_chars: int | None = None) -> str:
    if not isinstance(value, str):
        raise _bad(number, f"'{field}' must be a string")
    if max_chars is not None and len(value) > max_chars:
        raise _bad(
            number, f"'{field}' is {len(value)} characters long; at most {max_chars} are taken"
        )
    try:  # JSON may escape half of a UTF-16 pair alone; no UTF-8 text, so nothing to store
        value.encode()
    except UnicodeEncodeError as exc:
        raise _bad(
            number, f"'{field}' has a lone UTF-16 surrogate at character {exc.start}"
        ) from exc
    return value


def _read_date(value: object) -> str | None:
    """A date in any form ST wrote, read as UTC, in our form (utc_now's); None if unreadable."""
    try:
        moment = _moment(value)
        if moment is None:
            return None
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError, KeyError):  # no such day, or out of range
        return None


def _moment(value: object) -> datetime | None:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):  # Unix milliseconds
        return datetime.fromtimestamp(value / 1000, UTC) if value >= 0 else None
    if not isinstance(value, str):
        return None
    if match := _MERIDIEM.fullmatch(value.strip()):
        month, day, year, hour, minute, half = match.groups()
        hour24 = int(hour) % 12 + (12 if half.lower() == "pm" else 0)
        return datetime(
            int(year), _MONTH_NUMBERS[month.lower()], int(day), hour24, int(minute), tzinfo=UTC
        )
    if match := _HUMANIZED.fullmatch(value.strip()):
        *parts, milliseconds = match.groups()
        year, month_number, day, hour, minute, second = map(int, parts)
        microseconds = int(milliseconds or 0) * 1000
        return datetime(year, month_number, day, hour, minute, second, microseconds, UTC)
    moment = datetime.fromisoformat(value.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _bad(number: int, problem: str) -> ValidationFailed:
    return ValidationFailed(f"Line {number}: {problem}.")
