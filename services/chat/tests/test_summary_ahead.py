"""Summaries made ahead (SUMMARY_AHEAD_RATIO): after a reply, in the background, so the turn
that needs a summary finds it ready. End to end against the LLM emulator with a small window;
the background work is waited for by polling what it leaves (Redis, the metrics), never by
a timed assertion."""

import asyncio
import json

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from avatar_chat.app import create_app
from avatar_chat.context.summaries import summaries_key
from avatar_chat.errors import LlmBusy
from avatar_chat.settings import ChatSettings
from avatar_shared.gate import Gate
from tests.helpers import returning_visitor

from .helpers import ask, emulated_llm, read_events
from .summarizing import (
    Conversation,
    is_summary_call,
    long_history,
    settings_for,
    summary_calls_started,
    summary_count,
    summary_in,
)

AHEAD = {"keep_recent_turns": 4, "summary_ahead_ratio": 0.4}
# A user's turn long enough to take the next prompt past the trigger (0.8 of the window),
# though not past the window itself: with a summary ready, that turn uses it.
LONG_TURN = "Let me tell you about the library of my childhood. " * 50
POLL_S, POLLS = 0.05, 200  # at most 10 s for background work the emulator answers at once


async def summaries_of(redis: Redis, session_id: str) -> dict[str, str]:
    """The session's stored summaries, once the background has made one and let go of the
    session's lock (a bounded wait: empty if it never does)."""
    lock = f"chat:session:{session_id}:summary-lock"
    for _ in range(POLLS):
        stored = await redis.hgetall(summaries_key(session_id))
        if stored and not await redis.exists(lock):
            return stored
        await asyncio.sleep(POLL_S)
    return {}


async def ahead_count(chat: httpx.AsyncClient, outcome: str) -> float:
    """avatar_chat_summaries_total{when="ahead", outcome=...} from the app's /metrics."""
    return await summary_count(chat, "ahead", outcome)


async def ahead_counted(chat: httpx.AsyncClient, outcomes: tuple[str, ...], more: float) -> bool:
    """Waits (bounded) until background summaries of those outcomes grew by `more`."""
    start = [await ahead_count(chat, o) for o in outcomes]
    for _ in range(POLLS):
        now = [await ahead_count(chat, o) for o in outcomes]
        if sum(now) - sum(start) >= more:
            return True
        await asyncio.sleep(POLL_S)
    return False


async def streamed(chat: httpx.AsyncClient, talk: Conversation) -> dict:
    """A streamed turn of `talk`, recorded like `Conversation.resend` records one."""
    before = len(talk.recorder.prompts)
    async with chat.stream("POST", "/api/chat", json=talk.body() | {"stream": True}) as r:
        events = await read_events(r)
    kind, done = events[-1]
    assert kind == "done", events[-1]
    talk.calls.append(talk.recorder.prompts[before:])
    talk.replies.append(done)
    talk.turns.append({"role": "assistant", "content": done["content"]})
    return done


def own_summary_calls(calls: list) -> list:
    """The summary calls a turn made before its chat call (the turn's own; any after it are
    the background's, started by its reply)."""
    chat_at = max(i for i, r in enumerate(calls) if not is_summary_call(r))
    return [r for r in calls[:chat_at] if is_summary_call(r)]


async def test_a_summary_made_after_a_reply_is_used_by_the_next_turn_without_waiting(
    app_client, redis, redis_url
):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend, **AHEAD))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 6)
            first = await streamed(chat, talk)  # below the trigger: the turns verbatim
            stored = await summaries_of(redis, talk.session_id)
            second = await talk.say(LONG_TURN)

    assert not first["context_summarized"] and summary_in(talk.chat_call(0)) is None
    assert stored, "no summary was made after the reply"
    (made,) = stored.values()
    assert summary_in(talk.chat_call(1)) == json.loads(made)["content"]  # the next turn has it
    assert own_summary_calls(talk.calls[1]) == []  # without making one itself
    assert second["context_summarized"] is True and second["context_truncated"] is False
    sent = talk.chat_call(1).messages_received[1:]
    assert sent == talk.turns[-len(sent) - 1 : -1] and len(sent) >= 4  # the recent verbatim


async def test_a_failed_background_summary_changes_nothing_for_the_user(
    app_client, redis, redis_url
):
    # The model takes 0.3 s to answer and a summary may take 0.1 s: every summary fails.
    with emulated_llm("ollama", first_token_latency_s=0.3) as backend:
        impatient = settings_for(redis_url, backend, summary_timeout_s=0.1, **AHEAD)
        async with app_client(create_app(impatient)) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 6)
            failing = ahead_counted(chat, ("failed",), 1)
            first, failed = await asyncio.gather(talk.resend(), failing)
            second = await talk.say(LONG_TURN)
            browser_cookies = chat.cookies
        # The same user comes back to a service whose summaries succeed: the next reply
        # makes the summary that failed.
        async with app_client(create_app(settings_for(redis_url, backend, **AHEAD))) as chat:
            chat.cookies.update(browser_cookies)
            talk.chat = chat
            await talk.say("Do you still remember my favourite numbers?")
            retried = await summaries_of(redis, talk.session_id)

    assert failed, "the background summary did not fail as arranged"
    for reply in (first, second):
        assert reply["content"] and not reply["context_summarized"]
        assert not reply["context_truncated"]
    # The turn after the failure sent the whole conversation, as it still fitted the window.
    assert talk.chat_call(1).messages_received[1:] == talk.turns[:15]
    assert own_summary_calls(talk.calls[1]) == []
    assert retried, "the summary was not made again after a later reply"


async def test_two_replicas_make_one_summary_not_two(app_client, redis, redis_url):
    # Summaries take a while, so the second replica's try comes while the first holds the
    # session's lock, or after it stored the summary; either way it makes none.
    with emulated_llm("ollama", first_token_latency_s=0.2) as backend:
        settings = settings_for(redis_url, backend, **AHEAD)
        async with (
            app_client(create_app(settings)) as one,
            app_client(create_app(settings)) as two,
        ):
            returning_visitor(one)
            two.cookies.update(one.cookies)  # one browser, its requests to either replica
            talk = Conversation(one, backend.recorder)
            long_history(talk, 6)
            settled = ahead_counted(one, ("made", "skipped"), 2)
            both = [c.post("/api/chat", json=talk.body()) for c in (one, two)]
            *replies, attempts_done = await asyncio.gather(*both, settled)
            stored = await summaries_of(redis, talk.session_id)

    assert [r.status_code for r in replies] == [200, 200]
    assert attempts_done, "the two replicas' background summaries did not both end"
    summary_calls = [r for r in backend.recorder.prompts if is_summary_call(r)]
    assert len(summary_calls) == 1 and len(stored) == 1


async def test_a_session_deleted_meanwhile_gets_no_summary_back(app_client, redis, redis_url):
    # The summary call takes 0.3 s: the session is deleted while it is being made.
    with emulated_llm("ollama", first_token_latency_s=0.3) as backend:
        async with app_client(create_app(settings_for(redis_url, backend, **AHEAD))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 6)

            async def reply_then_delete() -> int:
                await talk.resend()
                return (await chat.delete(f"/api/chat/sessions/{talk.session_id}")).status_code

            ended = ahead_counted(chat, ("made", "skipped", "failed"), 1)
            deleted, summary_ended = await asyncio.gather(reply_then_delete(), ended)

    assert deleted == 200 and summary_ended
    assert any(is_summary_call(r) for r in backend.recorder.prompts)  # it was being made
    assert await redis.exists(summaries_key(talk.session_id)) == 0


async def test_a_background_call_waits_behind_every_waiting_call_within_the_cap():
    gate = Gate(2, 5.0, LlmBusy)
    order: list[str] = []
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def call(caller: str, name: str, background: bool = False) -> None:
        nonlocal in_flight, most
        async with gate.slot(caller, background=background):
            in_flight += 1
            most = max(most, in_flight)
            order.append(name)
            await release.wait()
            in_flight -= 1

    holders = [asyncio.create_task(call("h", f"holder{n}")) for n in range(2)]
    await asyncio.sleep(0)
    waiting = []
    for caller, name, background in [
        ("s", "summary1", True),
        ("a", "a1", False),
        ("s", "summary2", True),
        ("b", "b1", False),
        ("a", "a2", False),
    ]:
        waiting.append(asyncio.create_task(call(caller, name, background)))
        await asyncio.sleep(0)  # queued in this order
    release.set()
    await asyncio.gather(*holders, *waiting)
    assert order == ["holder0", "holder1", "a1", "b1", "a2", "summary1", "summary2"]
    assert most == 2 and gate.free == 2


async def test_summaries_made_ahead_leave_a_slot_for_a_users_turn(app_client, redis_url):
    """Background summaries hold at most all the LLM slots but one: two long conversations'
    summaries on a 2-slot replica, and a new user's turn still gets a slot at once."""
    with emulated_llm("ollama", first_token_latency_s=1.0) as backend:
        settings = settings_for(
            redis_url, backend, llm_max_in_flight=2, llm_queue_wait_s=0.5, **AHEAD
        )
        async with app_client(create_app(settings)) as chat:
            returning_visitor(chat)  # one browser, two long conversations
            talks = [Conversation(chat, backend.recorder) for _ in range(2)]
            for talk in talks:
                long_history(talk, 6)
            await asyncio.gather(*(t.resend() for t in talks))  # each starts a summary
            assert await summary_calls_started(backend.recorder, 1)
            returning_visitor(chat)  # someone else
            other = await chat.post("/api/chat", json=ask("hi", tts_enabled=False))
    assert other.status_code == 200, other.json()


async def test_background_calls_hold_at_most_all_slots_but_one():
    gate = Gate(3, 5.0, LlmBusy)
    release = asyncio.Event()
    running: list[str] = []

    async def call(name: str, background: bool) -> None:
        async with gate.slot(name, background=background):
            running.append(name)
            await release.wait()

    summaries = [asyncio.create_task(call(f"summary{n}", True)) for n in range(3)]
    await asyncio.sleep(0)
    user = asyncio.create_task(call("user", False))
    await asyncio.sleep(0)
    assert sorted(running) == ["summary0", "summary1", "user"]  # the third waits
    release.set()
    await asyncio.gather(*summaries, user)
    assert len(running) == 4 and gate.free == 3


async def test_with_one_slot_background_work_still_runs():
    gate = Gate(1, 5.0, LlmBusy)
    async with gate.slot("s", background=True):
        pass
    assert gate.free == 1


def test_summarizing_ahead_must_come_before_the_trigger():
    with pytest.raises(ValidationError, match="SUMMARY_AHEAD_RATIO"):
        ChatSettings(summary_ahead_ratio=0.8, summary_trigger_ratio=0.8)
    assert ChatSettings(summary_ahead_ratio=0, summary_trigger_ratio=0.5).summary_ahead_ratio == 0
