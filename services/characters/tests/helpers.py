"""Helpers for the characters tests (plain functions; the fixtures are in conftest.py).

A helper used by one service's tests lives in its tests/helpers.py; one shared across
directories (`as_user`, `identity_from_test_header`) in the top-level tests/helpers.py.
Tests never import from a conftest."""

from pathlib import Path

from avatar_characters.app import create_app
from avatar_characters.settings import CharactersSettings
from avatar_devstack.ports import free_port
from avatar_shared.identity import current_identity
from tests.helpers import identity_from_test_header


def characters_app(redis_url: str, presets_file: Path, **overrides):
    """The characters app, where `as_user(name)` speaks as that user."""
    settings = CharactersSettings(
        redis_url=redis_url,
        characters_file=str(presets_file),
        tts_url=f"http://127.0.0.1:{free_port()}",  # no TTS service: any voice slug goes
        **{"character_writes_per_min": 10_000, **overrides},  # the rate has its own test
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app
