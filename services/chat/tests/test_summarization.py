"""Context summarization, end to end against the LLM emulators with a small window: the
emulator records every prompt it receives and counts its tokens by its own rule."""

import pytest

from avatar_chat.app import create_app
from avatar_emulators.replies import count_prompt_tokens

from .helpers import emulated_llm
from .summarizing import (
    KEEP,
    WINDOW,
    Conversation,
    as_line,
    conversation_of,
    is_summary_call,
    settings_for,
    summary_in,
    transcript,
    user_line,
)


@pytest.mark.parametrize("ahead", [0, 0.7])
async def test_a_long_conversation_stays_in_the_window_and_each_turn_is_summarized_once(
    app_client, redis_url, ahead
):
    # ahead 0: each summary is made by the turn that needs it; 0.7: after a reply, in the
    # background, whenever the next turn happens to come (above what the KEEP recent turns
    # take by themselves in this small window: at 0.6, every reply would make one).
    with emulated_llm("ollama") as backend:
        settings = settings_for(redis_url, backend, summary_ahead_ratio=ahead)
        async with app_client(create_app(settings)) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(60):
                await talk.say(user_line(i))
            session = (await chat.get(f"/api/chat/sessions/{talk.session_id}")).json()["data"]
            retried = await talk.resend()  # the same conversation again: a cache hit

    records = backend.recorder.prompts
    for record in records:  # nothing the model was sent was over its window
        assert record.dropped == 0
        assert record.options["num_ctx"] == WINDOW
        sent = count_prompt_tokens(record.messages_received)
        assert sent + record.options["num_predict"] <= WINDOW

    flags = [reply["context_summarized"] for reply in talk.replies[:60]]
    # True exactly on the reply whose prompt first carries a newer summary: one covering
    # more turns (those not sent verbatim; nothing is truncated) than the last reply's.
    chat_calls = [talk.chat_call(request) for request in range(61)]
    covered = [
        2 * request + 1 - (len(call.messages_received) - 1) if summary_in(call) else 0
        for request, call in enumerate(chat_calls[:60])
    ]
    assert flags == [now > before for before, now in zip([0, *covered[:-1]], covered, strict=True)]
    if not ahead:  # and the turn that needed it made it
        assert flags == [any(is_summary_call(r) for r in calls) for calls in talk.calls[:60]]
    assert 3 <= sum(flags) < 30, "summaries come in blocks of aged turns, not every turn"
    assert not any(reply["context_truncated"] for reply in talk.replies)

    for request, chat_call in enumerate(chat_calls[:60]):
        sent_turns = chat_call.messages_received[1:]
        conversation = talk.turns[: 2 * request + 1]
        assert sent_turns == conversation[-len(sent_turns) :]
        assert len(sent_turns) >= min(KEEP, len(conversation))  # the recent ones verbatim

    # Each turn summarized exactly once, in order (ahead, perhaps past what reply 59 used).
    summarized = [line for r in records if is_summary_call(r) for line in transcript(r)]
    assert len(summarized) >= session["summary"]["covered_turns"]
    assert summarized == [as_line(t) for t in talk.turns[: len(summarized)]]
    assert session["summary"]["content"] == summary_in(chat_calls[59])
    assert session["last_prompt_tokens"] == talk.replies[59]["usage"]["prompt_tokens"]

    if not ahead:  # the same summary again, made by no one
        assert retried["context_summarized"] is False
        assert chat_calls[60].messages_received == chat_calls[59].messages_received
        assert not any(is_summary_call(r) for r in talk.calls[60])
    else:  # or one made after reply 58 that request 59 came too early for
        again = 119 - (len(chat_calls[60].messages_received) - 1)
        assert retried["context_summarized"] is (again > covered[59])


async def test_editing_an_early_turn_makes_the_summary_stale(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        # Summaries made by the turns that need them: the edited turn's own calls are its.
        settings = settings_for(redis_url, backend, summary_ahead_ratio=0)
        async with app_client(create_app(settings)) as chat:
            talk = await conversation_of(30, chat, backend.recorder)
            old_system = talk.calls[-1][-1].messages_received[0]["content"]
            old_summary = old_system.split("# What happened so far\n")[1]
            assert any(r["context_summarized"] for r in talk.replies)
            talk.turns[2] = {"role": "user", "content": "Turn 2: actually I prefer poetry"}
            edited = await talk.say("Did you note my change of mind?")

    assert edited["context_summarized"] is True
    summary_calls = [r for r in talk.calls[-1] if is_summary_call(r)]
    rebuilt = [line for r in summary_calls for line in transcript(r)]
    assert rebuilt[0] == as_line(talk.turns[0])  # from the start: no prefix still matched
    assert "User: Turn 2: actually I prefer poetry" in rebuilt
    assert old_summary not in talk.calls[-1][-1].messages_received[0]["content"]


async def test_a_client_that_goes_back_still_gets_its_recent_turns_verbatim(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = await conversation_of(30, chat, backend.recorder)
            went_back = talk.turns[:45]  # turn 22 of 30: newer summaries exist
            talk.turns = list(went_back)
            await talk.resend()

    sent = talk.chat_call(-1).messages_received[1:]
    assert len(sent) >= KEEP and sent == went_back[-len(sent) :]


async def test_a_failed_summary_drops_old_turns_and_is_retried_next_time(app_client, redis_url):
    # The model takes 0.3 s to answer; summarizing may take only 0.1 s at first.
    with emulated_llm("ollama", first_token_latency_s=0.3) as backend:
        impatient = settings_for(redis_url, backend, summary_timeout_s=0.1)
        async with app_client(create_app(impatient)) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(20):  # summaries are due from turn 12 on, and all fail
                await talk.say(user_line(i))
            browser_cookies = chat.cookies  # the same user comes back to the restarted service
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            chat.cookies.update(browser_cookies)
            talk.chat = chat
            recovered = await talk.say(user_line(20))

    failed = talk.replies[:20]
    assert not any(reply["context_summarized"] for reply in failed)
    assert all(reply["content"] for reply in failed)  # the chat itself never failed
    truncated = [i for i, reply in enumerate(failed) if reply["context_truncated"]]
    assert truncated and truncated == list(range(truncated[0], 20))  # once over, always over
    for i in truncated:
        sent = talk.chat_call(i).messages_received
        assert count_prompt_tokens(sent) + 40 <= WINDOW
        assert sent[1]["role"] == "user" and sent[-1]["content"] == user_line(i)
        assert len(sent) - 1 < 2 * i + 1  # the oldest turns were left out
    assert recovered["context_summarized"] is True and recovered["context_truncated"] is False
