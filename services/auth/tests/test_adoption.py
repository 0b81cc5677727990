"""Auth's side of signing in keeping what the browser made (avatar_auth.adoption): each of
ADOPT_PEERS is asked over HTTP, signed; a peer that is down, or that does not serve the call
yet, is logged and the others go on. The peers here are real services on real ports: the
characters service, and one that does not serve the call (as chat before it joins). The whole
sign-in through the gateway: tests/e2e/test_sign_in.py."""

import io
import os
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from avatar_auth.adoption import Adopter
from avatar_auth.settings import AuthSettings
from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_gen3d.app import create_app as gen3d_app
from avatar_gen3d.settings import Gen3dSettings
from avatar_shared.app import open_http_client
from avatar_shared.identity import AnonymousIds
from tests.helpers import logged

from .helpers import probe_app

SECRET = os.environ["ANON_ID_SECRET"].encode()


@contextmanager
def characters_service(redis_url: str, **settings):
    config = CharactersSettings(
        redis_url=redis_url, tts_url=f"http://127.0.0.1:{free_port()}", **settings
    )
    with serve_in_thread(characters_app(config), lifespan="on") as url:
        yield url


async def anonymous_characters(url: str, count: int) -> tuple[str, list[str]]:
    """A browser's anonymous id and the ids of the characters it made."""
    anon_id, cookie = AnonymousIds(SECRET).mint()
    made = []
    async with httpx.AsyncClient(base_url=url, cookies={"anon_id": cookie}) as browser:
        for index in range(count):
            answer = await browser.post(
                "/api/characters", json={"name": f"#{index}", "persona": "조용한 사서."}
            )
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["data"]["id"])
    return anon_id, made


async def adopted(settings: AuthSettings, anon_id: str, user_id: str) -> bool:
    async with open_http_client() as http:
        return await Adopter(settings, http, AnonymousIds(SECRET)).adopt(anon_id, user_id)


async def test_every_peer_moved_everything(redis_url, redis):
    with characters_service(redis_url) as characters:
        anon_id, made = await anonymous_characters(characters, 2)
        settings = AuthSettings(
            redis_url=redis_url, characters_url=characters, adopt_peers="characters"
        )
        with logged("avatar.auth.adoption") as records:
            everything = await adopted(settings, anon_id, "user-1")
    assert everything is True
    assert set(await redis.zrange("characters:owner:user-1", 0, -1)) == set(made)
    assert await redis.exists(f"characters:owner:{anon_id}") == 0
    (record,) = records
    assert record.fields["peer"] == "characters"
    assert record.fields["kinds"]["characters"] == {"moved": 2, "kept": 0}


async def test_a_peer_without_the_call_or_down_is_logged_and_the_others_move(
    redis_url, redis, auth_url
):
    down = f"http://127.0.0.1:{free_port()}"
    # A service of ours that does not serve the call (404), as chat until it joins.
    with (
        characters_service(redis_url) as characters,
        serve_in_thread(probe_app(redis_url, auth_url), lifespan="on") as without_it,
    ):
        anon_id, made = await anonymous_characters(characters, 1)
        settings = AuthSettings(
            redis_url=redis_url,
            characters_url=characters,
            chat_url=without_it,
            tts_url=down,
            adopt_peers="chat,characters,tts",
            adopt_timeout_s=2,
        )
        with logged("avatar.auth.adoption") as records:
            everything = await adopted(settings, anon_id, "user-1")
    assert everything is False  # the anonymous id may still hold what chat and tts keep
    assert await redis.zrange("characters:owner:user-1", 0, -1) == made
    failures = {r.fields["peer"]: r.fields["code"] for r in records if r.levelname == "WARNING"}
    assert failures == {"chat": "not_found", "tts": "tts_unavailable"}


async def test_gen3d_is_asked_by_default(redis_url, redis, tmp_path):
    """A browser's 3D job, not finished at its sign-in: gen3d is asked (by default), answers
    that it stays for now (it moves as it ends: gen3d's tests), so the browser keeps its
    anonymous id."""
    config = Gen3dSettings(redis_url=redis_url, assets_dir=str(tmp_path / "assets"))
    with (
        characters_service(redis_url) as characters,
        serve_in_thread(gen3d_app(config), lifespan="on") as gen3d,
    ):
        anon_id, cookie = AnonymousIds(SECRET).mint()
        picture = io.BytesIO()
        Image.new("RGB", (320, 240), (200, 60, 50)).save(picture, format="PNG")
        async with httpx.AsyncClient(base_url=gen3d, cookies={"anon_id": cookie}) as browser:
            files = {"image": ("a.png", picture.getvalue(), "image/png")}
            assert (await browser.post("/api/generate", files=files)).status_code == 202
        settings = AuthSettings(
            redis_url=redis_url,
            characters_url=characters,
            chat_url=characters,  # any service: chat's answer is not what is tested here
            gen3d_url=gen3d,
        )
        with logged("avatar.auth.adoption") as records:
            everything = await adopted(settings, anon_id, "user-1")
    assert everything is False  # the unfinished job is the anonymous id's until it ends
    kinds = {r.fields["peer"]: r.fields.get("kinds") for r in records}
    assert kinds["gen3d"] == {"3d_jobs": {"moved": 0, "kept": 1}}


async def test_what_stayed_anonymous_means_not_everything(redis_url, redis):
    with characters_service(redis_url, max_characters_per_user=1) as characters:
        anon_id, made = await anonymous_characters(characters, 2)
        settings = AuthSettings(
            redis_url=redis_url, characters_url=characters, adopt_peers="characters"
        )
        everything = await adopted(settings, anon_id, "user-1")
    assert everything is False
    assert await redis.zrange("characters:owner:user-1", 0, -1) == made[:1]
    assert await redis.zrange(f"characters:owner:{anon_id}", 0, -1) == made[1:]


async def test_no_peers_move_nothing(redis_url, redis):
    with characters_service(redis_url) as characters:
        anon_id, made = await anonymous_characters(characters, 1)
        settings = AuthSettings(redis_url=redis_url, characters_url=characters, adopt_peers="")
        everything = await adopted(settings, anon_id, "user-1")
    assert everything is False
    assert await redis.zrange(f"characters:owner:{anon_id}", 0, -1) == made


def test_peers_must_be_services_of_the_registry(redis_url):
    default = ["characters", "chat", "gen3d"]
    assert list(AuthSettings(redis_url=redis_url).adopt_peer_urls) == default
    with pytest.raises(ValidationError, match="not services of the registry: edge, chatt"):
        AuthSettings(redis_url=redis_url, adopt_peers="characters, edge,chatt")
