"""The keys a local stack needs and nobody should have to invent: made once into the
git-ignored run folder and reused by later runs (tokens and anonymous ids survive a restart).
A value already in the environment wins."""

import os
import secrets
from pathlib import Path

from avatar_shared.tokens import generate_key, write_key_set

DEMO_CLIENT_ID = "avatar-forge-demo"


def dev_secrets(run_dir: Path) -> dict[str, str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    values = {}
    if "ANON_ID_SECRET" not in os.environ:
        values["ANON_ID_SECRET"] = _kept_secret(run_dir / "anon-id-secret")
    if "SIGNING_KEYS_FILE" not in os.environ:
        keys_file = run_dir / "auth-signing-keys.json"
        if not keys_file.exists():
            write_key_set(keys_file, [generate_key()])
        values["SIGNING_KEYS_FILE"] = str(keys_file)
    return values


def _kept_secret(path: Path) -> str:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()
