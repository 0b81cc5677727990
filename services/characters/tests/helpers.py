"""Helpers for the characters tests (plain functions; the fixtures are in conftest.py).

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories (`as_user`, `identity_from_test_header`) in the top-level tests/helpers.py.
Tests never import from a conftest."""

import base64
import json
import struct
from pathlib import Path

from avatar_characters.app import create_app
from avatar_characters.settings import CharactersSettings
from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.ports import free_port
from avatar_shared.identity import current_identity
from tests.helpers import as_user, identity_from_test_header

SERAPHINA = REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"
ALICE = as_user("alice")


def characters_app(redis_url: str, presets_file: Path, real_identity: bool = False, **overrides):
    """The characters app, where `as_user(name)` speaks as that user (`real_identity`: where
    callers are who their cookie or token says, as through the gateway)."""
    settings = CharactersSettings(
        redis_url=redis_url,
        characters_file=str(presets_file),
        tts_url=f"http://127.0.0.1:{free_port()}",  # no TTS service: any voice slug goes
        **{"character_writes_per_min": 10_000, **overrides},  # the rate has its own test
    )
    app = create_app(settings)
    if not real_identity:
        app.dependency_overrides[current_identity] = identity_from_test_header
    return app


def original_seraphina() -> dict:
    return png_chunks(SERAPHINA.read_bytes())["chara"]


async def upload(client, name: str, content: bytes, **headers):
    files = {"file": (name, content, "application/octet-stream")}
    return await client.post("/api/characters/import", files=files, headers=headers or ALICE)


def v3_card(**data: object) -> dict:
    return {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {"name": "Aria", "description": "A wandering bard.", **data},
    }


def png_chunks(png: bytes) -> dict[str, dict]:
    """Card chunks of a PNG, decoded; written independently of the code under test."""
    found, offset = {}, 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            keyword, text = data.split(b"\0", 1)
            found[keyword.decode()] = json.loads(base64.b64decode(text))
        offset += 12 + length
    return found


def persona(name: str = "여행자", description: str = "숲을 지나는 젊은 약초꾼.", **more) -> dict:
    """A body for POST or PUT /api/personas."""
    return {"name": name, "description": description, **more}


async def every_page(client, path: str, key: str, headers: dict, limit: int) -> list[list[dict]]:
    """Every page of a listing, following `next_cursor` until there is none."""
    pages, cursor = [], ""
    while True:
        answer = await client.get(f"{path}?limit={limit}{cursor}", headers=headers)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        pages.append(data[key])
        if data["next_cursor"] is None:
            return pages
        cursor = f"&cursor={data['next_cursor']}"
