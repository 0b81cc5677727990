"""Where auth's signing keys come from, and when it refuses to start."""

import json

import pytest

from avatar_auth.app import create_app
from avatar_auth.keys import MissingSigningKeys
from avatar_auth.settings import AuthSettings
from avatar_shared.tokens import generate_key, write_key_set


def test_production_refuses_to_start_without_configured_keys():
    with pytest.raises(MissingSigningKeys, match="SIGNING_KEYS_FILE"):
        create_app(AuthSettings(env="production"))


def test_a_key_set_without_private_parts_is_refused(tmp_path):
    public_only = tmp_path / "keys.json"
    public_only.write_text(json.dumps({"keys": [generate_key().as_dict(private=False)]}))
    with pytest.raises(ValueError, match="private part"):
        create_app(AuthSettings(env="production", signing_keys_file=str(public_only)))


async def test_the_jwks_publishes_every_key_and_no_private_part(app_client, redis_url, tmp_path):
    current, previous = generate_key(), generate_key()
    keys = tmp_path / "keys.json"
    write_key_set(keys, [current, previous])
    settings = AuthSettings(redis_url=redis_url, env="production", signing_keys_file=str(keys))
    async with app_client(create_app(settings)) as auth:
        response = await auth.get("/api/auth/.well-known/jwks.json")
    published = response.json()["keys"]
    assert [k["kid"] for k in published] == [current.kid, previous.kid]
    assert all("d" not in k and "p" not in k for k in published)
    assert "max-age" in response.headers["cache-control"]
