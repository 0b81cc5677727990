"""A turn's prompt fits the model's window, though the estimate is not the model's tokenizer.
End to end against the vLLM emulator with max_model_len = LLM_CONTEXT_TOKENS = 2,048: it
refuses (400) a prompt plus max_tokens past that, as vLLM does. Its tokens are whitespace
words: English prose costs about half the default estimate (one token per three characters),
text of one-letter words three times the estimate the prose teaches."""

from avatar_chat.llm.wire import context_refused

from .summarizing import is_summary_call, summary_count
from .test_memories import (  # noqa: F401  (characters_url: the fixture the helper needs)
    ALICE,
    characters_url,
    idle,
    summarizing_ahead,
)

WINDOW = 2048
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
        status, second = await turn(client, body, [*HISTORY, said, {"role": "user", "content": "And?"}])
    assert status == 200, second
    chats = [p for p in backend.recorder.prompts if not is_summary_call(p)]
    assert all(p.prompt_tokens + 64 <= WINDOW for p in chats)
