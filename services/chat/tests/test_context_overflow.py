"""A turn's prompt fits the model's window, though the estimate is not the model's tokenizer.
End to end against the vLLM emulator with max_model_len = LLM_CONTEXT_TOKENS = 2,048: it
refuses (400) a prompt plus max_tokens past that, as vLLM does. Its tokens are whitespace
words: English prose costs about half the default estimate (one token per three characters),
text of one-letter words three times the estimate the prose teaches."""

import logging
import re
from collections.abc import Iterator

import pytest

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.llm.wire import context_refused
from avatar_emulators.openai_compat import OpenAICompatConfig
from avatar_emulators.server import serve_in_thread

from .helpers import read_events
from .summarizing import is_summary_call, summary_count
from .test_memories import ALICE, idle, summarizing_ahead

WINDOW = 2048


@pytest.fixture(scope="module")
def characters_url(redis_url: str) -> Iterator[str]:
    app = characters_app(CharactersSettings(redis_url=redis_url))
    with serve_in_thread(app, lifespan="on") as url:
        yield url


# A client's history new to the server, English prose: its first turn is planned with the
# default estimate (the model's tokens not yet learned), which overcounts it.
STORY = ("I keep telling stories about the old library by the river. " * 7)[:359]
HISTORY = [
    turn
    for i in range(21)
    for turn in (
        {"role": "user", "content": f"{i}: {STORY}"},
        {"role": "assistant", "content": "A fine story."},
    )
]


async def turn(client, body: dict, turns: list[dict]) -> tuple[int, dict]:
    body["messages"] = turns
    response = await client.post("/api/chat", json=body, headers=ALICE)
    if response.status_code == 200:
        body["session_id"] = response.json()["data"]["session_id"]
    return response.status_code, response.json()


async def test_the_summary_made_after_a_first_turn_counts_as_the_model_did(
    app_client, redis_url, characters_url
):
    """The summary made ahead after the first reply is planned with what that reply's count
    taught, as the next turn is: with the default estimate, its overcount left the call no
    room ("window too small"), and the next turn, with no summary, was sent past the window
    (the model answered 400, the user a 502)."""
    async with summarizing_ahead(
        app_client, redis_url, characters_url, WINDOW, reply_words=500
    ) as (client, backend):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        failed = await summary_count(client, "ahead", "failed")
        made = await summary_count(client, "ahead", "made")
        status, first = await turn(client, body, [*HISTORY, {"role": "user", "content": "So?"}])
        assert status == 200, first
        await idle(backend)  # the summary made ahead, in as many calls as it takes
        assert await summary_count(client, "ahead", "failed") == failed
        assert await summary_count(client, "ahead", "made") > made
        said = {"role": "assistant", "content": first["data"]["content"]}
        last = {"role": "user", "content": "And?"}
        status, second = await turn(client, body, [*HISTORY, said, last])
    assert status == 200, second
    chats = [p for p in backend.recorder.prompts if not is_summary_call(p)]
    assert all(p.prompt_tokens + 64 <= WINDOW for p in chats)


# Text of one-letter words: the model counts each, the estimate a third of its characters.
TERSE = [
    turn
    for i in range(40)
    for turn in (
        {"role": "user", "content": f"{i} " + "o " * 30},
        {"role": "assistant", "content": "a " * 30},
    )
]


async def test_a_prompt_the_model_refuses_as_too_long_is_planned_again_by_its_count(
    app_client, redis_url, characters_url
):
    """An estimate can undercount past the headroom (learned from a prompt of one kind of
    text, used on another): the model server's refusal says how many tokens it counted, and
    the turn is planned again (summarized, trimmed) by that count, once, rather than answer
    a 502."""
    async with summarizing_ahead(app_client, redis_url, characters_url, WINDOW) as (
        client,
        backend,
    ):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        status, first = await turn(client, body, [{"role": "user", "content": "Hello there!"}])
        assert status == 200, first  # the model's tokens learned from a prompt of prose
        said = {"role": "assistant", "content": first["data"]["content"]}
        last = {"role": "user", "content": "And then?"}
        status, second = await turn(client, body, [*TERSE, said, last])
    assert status == 200, second
    assert second["data"]["context_truncated"] or second["data"]["context_summarized"]
    [*_, sent] = [p for p in backend.recorder.prompts if not is_summary_call(p)]
    assert sent.prompt_tokens + 64 <= WINDOW


async def test_a_prompt_refused_again_when_planned_again_says_it_no_longer_fits(
    app_client, redis_url, characters_url
):
    """Planned again by the model's count, a prompt can still be refused (what was cut cost
    the model less than what is left: here a last message of one-letter words): the turn
    is not planned a third time, and answers a 413 saying the conversation no longer fits
    (it was a 502 `llm_error`)."""
    async with summarizing_ahead(app_client, redis_url, characters_url, WINDOW) as (
        client,
        backend,
    ):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        hello = {"role": "user", "content": "Hello there!"}
        status, first = await turn(client, body, [hello])
        assert status == 200, first
        said = {"role": "assistant", "content": first["data"]["content"]}
        calls = len(backend.recorder.prompts)
        status, refused = await turn(
            client, body, [hello, said, {"role": "user", "content": "o " * 1800}]
        )
    assert status == 413, refused
    assert refused["error"]["code"] == "context_too_long"
    assert "no longer fits" in refused["error"]["message"]
    assert len(backend.recorder.prompts) == calls  # both refused: no reply was made


async def test_a_prompt_that_fits_the_window_as_planned_is_not_planned_again(
    app_client, redis_url, characters_url, caplog
):
    """A refusal whose count and max_tokens fit the window the turn was planned for comes
    from a server whose window is smaller (restarted with less, or an operator's setting
    larger than the server's): planned again, the prompt would fit that window as it did,
    so the 413 is answered at once, its one refusal the only one (it was planned again and
    sent again, to be refused again)."""
    llm_log = logging.getLogger("avatar.llm")
    llm_log.addHandler(caplog.handler)
    try:
        async with summarizing_ahead(app_client, redis_url, characters_url, WINDOW) as (
            client,
            backend,
        ):
            body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
            hello = {"role": "user", "content": "Hello there!"}
            status, first = await turn(client, body, [hello])
            assert status == 200, first  # the window of 2,048 known, for good
            said = {"role": "assistant", "content": first["data"]["content"]}
            assert isinstance(backend.config, OpenAICompatConfig)
            backend.config.max_model_len = WINDOW // 2  # the server restarted with less
            caplog.clear()
            status, refused = await turn(client, body, [*TERSE[:40], said, hello])
    finally:
        llm_log.removeHandler(caplog.handler)
    assert status == 413, refused
    assert refused["error"]["code"] == "context_too_long"
    [refusal] = [r for r in caplog.records if "refused the prompt's length" in r.getMessage()]
    counted = int(re.findall(r"contains (\d+) input tokens", refusal.getMessage())[0])
    assert WINDOW // 2 < counted + 64 <= WINDOW  # past the server's window, not the planned


async def test_a_stream_the_model_refuses_as_too_long_is_planned_again_by_its_count(
    app_client, redis_url, characters_url
):
    """Streamed, the refusal comes before the first delta: the turn is planned again by the
    server's count as a turn not streamed is, and the client gets an ordinary stream (it was
    a 413 on every try, while the same turn not streamed was answered)."""
    async with summarizing_ahead(app_client, redis_url, characters_url, WINDOW) as (
        client,
        backend,
    ):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        status, first = await turn(client, body, [{"role": "user", "content": "Hello there!"}])
        assert status == 200, first
        said = {"role": "assistant", "content": first["data"]["content"]}
        body.update(stream=True, messages=[*TERSE, said, {"role": "user", "content": "So?"}])
        async with client.stream("POST", "/api/chat", json=body, headers=ALICE) as response:
            assert response.status_code == 200, await response.aread()
            events = await read_events(response)
    kinds = [kind for kind, _ in events]
    assert "delta" in kinds and kinds[-1] == "done", events
    done = events[-1][1]
    assert done["context_truncated"] or done["context_summarized"]
    [*_, sent] = [p for p in backend.recorder.prompts if not is_summary_call(p)]
    assert sent.prompt_tokens + 64 <= WINDOW


async def test_a_stream_refused_again_when_planned_again_says_it_no_longer_fits(
    app_client, redis_url, characters_url
):
    """Streamed, a prompt refused again when planned again is answered as it is: a 413
    saying the conversation no longer fits the window (not a 502 `llm_error`, naming nothing
    the user could do)."""
    async with summarizing_ahead(app_client, redis_url, characters_url, WINDOW) as (client, _):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        hello = {"role": "user", "content": "Hello there!"}
        status, first = await turn(client, body, [hello])
        assert status == 200, first
        said = {"role": "assistant", "content": first["data"]["content"]}
        last = {"role": "user", "content": "o " * 1800}
        body.update(stream=True, messages=[hello, said, last])
        response = await client.post("/api/chat", json=body, headers=ALICE)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "context_too_long"
    assert "no longer fits" in response.json()["error"]["message"]


def test_each_of_vllms_refusals_of_a_long_prompt_gives_its_count():
    """vLLM has said it several ways (older, newer, current; the prompt alone past the
    window; a prompt it stopped counting past the window: "at least")."""
    said = [
        "This model's maximum context length is 2048 tokens. However, you requested 2005 "
        "tokens in the messages, Please reduce the length of the messages.",
        "This model's maximum context length is 2048 tokens. However, you requested 64 output "
        "tokens and your prompt contains 2005 input tokens, for a total of 2069 tokens. Please "
        "reduce the length of the input prompt or the number of requested output tokens.",
        "This model's maximum context length is 2048 tokens. However, you requested 64 output "
        "tokens and your prompt contains at least 2005 input tokens, for a total of at least "
        "2069 tokens. Please reduce the length of the input prompt or the number of requested "
        "output tokens.",
        "This model's maximum context length is 2048 tokens. However, you requested 2069 "
        "tokens (2005 in the messages, 64 in the completion). Please reduce the length of the "
        "messages or completion.",
        "'max_tokens' or 'max_completion_tokens' is too large: 64. This model's maximum "
        "context length is 2048 tokens and your request has 2005 input tokens (64 > 2048 - "
        "2005).",
        "This model's maximum context length is 2048 tokens. However, your request has 2005 "
        "input tokens. Please reduce the length of the input messages.",
        "You passed 2005 input tokens and requested 64 output tokens. However, the model's "
        "context length is only 2048 tokens, resulting in a maximum input length of 1984 "
        "tokens. Please reduce the length of the input prompt. (parameter=input_tokens, "
        "value=2005)",
    ]
    for text in said:
        body = f'{{"error": {{"message": "{text}", "type": "BadRequestError", "code": 400}}}}'
        refused = context_refused(body.encode())
        assert refused is not None and refused.prompt_tokens == 2005, text
    # Characters, not tokens: a refusal, but no count to plan again by.
    characters = (
        "This model's maximum context length is 2048 tokens. However, you requested 64 output "
        "tokens and your prompt contains 100000 characters (more than 19840 characters, which "
        "is the upper bound for 1984 input tokens). Please reduce the length of the input "
        "prompt or the number of requested output tokens."
    )
    body = f'{{"error": {{"message": "{characters}", "code": 400}}}}'
    refused = context_refused(body.encode())
    assert refused is not None and refused.prompt_tokens is None
    assert context_refused(b'{"error": {"message": "temperature must be a number"}}') is None
