"""Who owns what, end to end through the gateway: two signed-in users (real sign-ins at the
demo OpenID provider) and two anonymous browsers are four strangers to each other across
characters, chat sessions and audio files."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.oidc_browser import FRONTEND, browser, sign_in, walk

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Imported", "description": "d", "first_mes": "hi", "mes_example": ""},
}
CALLBACK = "/api/auth/google/callback"
SPOKEN = {
    "messages": [{"role": "user", "content": "안녕하세요"}],
    "persona": "p",
    "tts_enabled": True,
    "tts_mode": "realtime",
}


@pytest.fixture
async def people(stack) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {name: browser(stack) for name in ("ann", "ben", "anon-1", "anon-2")}
    try:
        for name in ("ann", "ben"):
            await sign_in(clients[name], f"{name}-{id(clients)}")
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def test_characters_are_changed_only_by_their_owner(people):
    for owner, client in people.items():
        made = await client.post("/api/characters", json={"name": owner, "persona": "p"})
        assert made.status_code == 201, made.text
        character_id = made.json()["data"]["id"]
        for stranger, other in people.items():
            if stranger == owner:
                continue
            own_list = (await other.get("/api/characters")).json()["data"]
            assert character_id not in {c["id"] for c in own_list["characters"]}
            changed = await other.put(
                f"/api/characters/{character_id}", json={"name": "mine now", "persona": "x"}
            )
            deleted = await other.delete(f"/api/characters/{character_id}")
            assert changed.status_code == deleted.status_code == 403, (owner, stranger)
        kept = (await client.get(f"/api/characters/{character_id}")).json()["data"]
        assert kept["name"] == owner


async def test_chat_sessions_and_audio_are_their_owners_only(people):
    for owner, client in people.items():
        reply = await client.post("/api/chat", json=SPOKEN)
        assert reply.status_code == 200, reply.text
        data = reply.json()["data"]
        session, audio = data["session_id"], data["audio_url"]
        assert audio and (await client.get(audio)).status_code == 200
        assert (await client.get(f"/api/chat/sessions/{session}")).status_code == 200
        for stranger, other in people.items():
            if stranger == owner:
                continue
            history = await other.get(f"/api/chat/sessions/{session}")
            carry_on = await other.post("/api/chat", json={**SPOKEN, "session_id": session})
            heard = await other.get(audio)
            assert [history.status_code, carry_on.status_code, heard.status_code] == [404] * 3


async def test_a_header_naming_a_user_is_not_trusted(people):
    ann = people["ann"]
    mine = (await ann.post("/api/characters", json={"name": "n", "persona": "p"})).json()["data"]
    me = (await ann.get("/api/auth/me")).json()["id"]
    intruder = people["anon-1"]
    for header in ("X-User-Id", "X-Forwarded-User", "X-Auth-Request-User"):
        response = await intruder.delete(f"/api/characters/{mine['id']}", headers={header: me})
        assert response.status_code == 403


async def own_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/api/characters")).json()["data"]["characters"])


async def test_a_cross_site_multipart_import_is_refused_and_stores_nothing(people):
    ann = people["ann"]
    before = await own_count(ann)
    upload = {"file": ("card.json", json.dumps(CARD).encode(), "application/json")}
    refused = await ann.post(
        "/api/characters/import", files=upload, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cross_origin_refused"
    assert await own_count(ann) == before
    allowed = await ann.post("/api/characters/import", files=upload, headers={"Origin": FRONTEND})
    assert allowed.status_code == 201, allowed.text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/characters/import", "file"),
        ("/api/chat/sessions/import", "file"),
        ("/api/generate", "image"),
    ],
)
async def test_a_cross_site_form_post_plants_nothing_in_a_new_browser(stack, path, field):
    """Login CSRF: another site's auto-submitted form, in a browser without our cookies yet,
    would be given a fresh anonymous id holding the attacker's data (and at sign-in, the
    victim's account would adopt it)."""
    upload = {field: ("card.json", json.dumps(CARD).encode(), "application/json")}
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with browser(stack) as victim:
        refused = await victim.post(path, files=upload, headers=cross_site)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "cross_origin_refused"
        assert not refused.headers.get_list("set-cookie") and not victim.cookies
        assert await own_count(victim) == 0


async def test_the_oauth_code_is_never_logged(stack):
    async with browser(stack) as client:
        started = await client.get("/api/auth/google/login")
        at_callback = await walk(client, started, "logged", stop_at=lambda url: CALLBACK in url)
        callback = at_callback.headers["location"]
        code = parse_qs(urlsplit(callback).query)["code"][0]
        assert (await client.get(callback)).status_code == 302
    lines = [
        line
        for path in Path(stack.supervisor.log_dir).glob("*.log")  # noqa: ASYNC240 (a test)
        for line in path.read_text(errors="replace").splitlines()
    ]
    assert any(CALLBACK in line for line in lines), "the callback request is logged, by path"
    assert not [line for line in lines if code in line]
