"""Summarization at its edges: streamed replies, concurrent requests of one session, the
model's own window, and replies that cannot fit at all."""

import asyncio

import pytest

from avatar_chat.app import create_app
from avatar_chat.context.summaries import summaries_key
from avatar_emulators.replies import count_prompt_tokens
from tests.helpers import returning_visitor

from .helpers import emulated_llm, read_events
from .summarizing import (
    PERSONA,
    Conversation,
    is_summary_call,
    long_history,
    settings_for,
    summary_calls_started,
    transcript,
    user_line,
)


async def test_a_streamed_reply_reports_its_summary_in_the_done_event(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 20)
            async with chat.stream("POST", "/api/chat", json=talk.body() | {"stream": True}) as r:
                events = await read_events(r)

    assert [kind for kind, _ in events][-1] == "done"
    assert events[-1][1]["context_summarized"] is True
    assert any(is_summary_call(record) for record in backend.recorder.prompts)


async def test_two_requests_of_one_session_at_once_summarize_once(app_client, redis_url):
    with emulated_llm("ollama", first_token_latency_s=0.2) as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            returning_visitor(chat)  # both requests come from one known browser
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 20)
            first, second = await asyncio.gather(
                chat.post("/api/chat", json=talk.body()), chat.post("/api/chat", json=talk.body())
            )

    # One made the summary, the other waited for it: both prompts are the first to use one.
    flags = [r.json()["data"]["context_summarized"] for r in (first, second)]
    assert flags == [True, True]
    summarized = [
        line for r in backend.recorder.prompts if is_summary_call(r) for line in transcript(r)
    ]
    assert len(summarized) == len(set(summarized)) > 0  # no turn was summarized twice


@pytest.mark.parametrize("backend_name", ["ollama", "vllm"])
async def test_a_smaller_trained_length_wins_over_the_setting(app_client, redis_url, backend_name):
    trained = {"context_length": 900} if backend_name == "ollama" else {"max_model_len": 900}
    with emulated_llm(backend_name, **trained) as backend:
        settings = settings_for(redis_url, backend, llm_context_tokens=8192)
        async with app_client(create_app(settings)) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(16):
                await talk.say(user_line(i))

    assert any(reply["context_summarized"] for reply in talk.replies)
    for record in backend.recorder.prompts:
        assert count_prompt_tokens(record.messages_received) + 64 <= 900
        if backend_name == "ollama":
            assert record.options["num_ctx"] == 900


async def test_a_reply_that_cannot_fit_the_window_is_refused_up_front(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            body = {
                "messages": [{"role": "user", "content": "hello"}],
                "persona": PERSONA,
                "max_tokens": 2000,
            }
            response = await chat.post("/api/chat", json=body)

    assert response.status_code == 422
    assert "context window of 1200" in response.json()["error"]["message"]
    assert backend.recorder.prompts == []


async def test_summary_calls_count_in_the_callers_chat_rate(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        settings = settings_for(redis_url, backend, chat_rate_per_min=3)
        async with app_client(create_app(settings)) as chat:
            returning_visitor(chat)
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 60)  # needs more summary calls than the rate has room for
            reply = await talk.resend()
            next_turn = await chat.post("/api/chat", json=talk.body())

    summary_calls = [r for r in backend.recorder.prompts if is_summary_call(r)]
    assert len(summary_calls) == 2  # the turn itself and two summary calls: 3 a minute
    assert reply["context_truncated"] is True  # the rest waits for a later turn
    assert next_turn.status_code == 429
    assert next_turn.json()["error"]["code"] == "rate_limited"


async def test_a_conversation_deleted_during_its_turns_summary_gets_no_summary_back(
    app_client, redis, redis_url
):
    """A turn's own summary is saved only while its session exists: a client's record
    deleted during the summary call keeps no summary (nothing could delete it later)."""
    with emulated_llm("ollama", first_token_latency_s=0.5) as backend:
        settings = settings_for(redis_url, backend, summary_ahead_ratio=0)
        async with app_client(create_app(settings)) as chat:
            talk = Conversation(chat, backend.recorder)
            await talk.say(user_line(0))  # the record exists
            long_history(talk, 30)  # the next turn is past the trigger: it summarizes

            async def delete_during_the_summary() -> int:
                assert await summary_calls_started(backend.recorder, 1)
                return (await chat.delete(f"/api/chat/sessions/{talk.session_id}")).status_code

            turn, deleted = await asyncio.gather(
                chat.post("/api/chat", json=talk.body()), delete_during_the_summary()
            )
            left = await redis.exists(summaries_key(talk.session_id))
            meta = await redis.exists(f"chat:session:{talk.session_id}")
    assert deleted == 200 and turn.status_code == 404, (deleted, turn.text)
    assert meta == 0 and left == 0


async def test_a_failed_first_turn_with_a_chosen_id_leaves_no_summary(app_client, redis, redis_url):
    """A client's first turn under an id of its choosing summarizes, then its reply fails:
    no session was stored, and neither is its summary."""
    with emulated_llm("ollama", first_token_latency_s=0.5) as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 30)

            async def fail_the_reply() -> None:
                # The first summary is saved when the second is asked for: the reply fails.
                assert await summary_calls_started(backend.recorder, 2)
                assert backend.config is not None
                backend.config.fail_status = 500

            turn, _ = await asyncio.gather(
                chat.post("/api/chat", json=talk.body()), fail_the_reply()
            )
            left = await redis.exists(summaries_key(talk.session_id))
    assert turn.status_code >= 500 and any(is_summary_call(r) for r in backend.recorder.prompts)
    assert left == 0
