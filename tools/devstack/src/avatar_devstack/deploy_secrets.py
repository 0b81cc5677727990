"""`make deploy-secrets`: the key files of a deployment, one per secret setting, made once into
deploy/secrets/ (git-ignored, never in an image) and kept on later runs. Compose mounts each
as /run/secrets/<name>; for Kubernetes, `kubectl create secret generic avatar-forge-secrets
--from-file=deploy/secrets/` makes the Secret the manifests mount there.

A value in the environment (GOOGLE_CLIENT_SECRET, VLLM_API_KEY) is written instead of a made
one. The folder is its owner's only; the files in it are readable by all, because compose
bind-mounts each file as it is and the apps run as their own user (uid 10001).
"""

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from avatar_devstack.environment import REPO_ROOT
from avatar_shared.tokens import generate_key, write_key_set

DEPLOY_SECRETS_DIR = REPO_ROOT / "deploy" / "secrets"


def _key_set(path: Path) -> None:
    write_key_set(path, [generate_key()])


def _text(value: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(value)

    return write


# Each file is named after the setting it fills (pydantic-settings reads it by that name), but
# the signing keys: auth reads the file SIGNING_KEYS_FILE names.
MAKERS: dict[str, Callable[[Path], None]] = {
    "anon_id_secret": _text(secrets.token_urlsafe(32)),
    "auth_signing_keys": _key_set,
    # The demo OpenID provider and auth share it; for Google, write Google's here.
    "google_client_secret": _text(os.environ.get("GOOGLE_CLIENT_SECRET", "")
                                  or secrets.token_urlsafe(24)),
    "vllm_api_key": _text(os.environ.get("VLLM_API_KEY", "")),
}  # fmt: skip


def make_deploy_secrets(folder: Path) -> list[str]:
    """Writes the missing files; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    made = []
    for name, make in MAKERS.items():
        path = folder / name
        if not path.exists():
            make(path)
            path.chmod(0o644)
            made.append(name)
    return made


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DEPLOY_SECRETS_DIR
    made = make_deploy_secrets(folder)
    print(f"{folder}: made {', '.join(made) or 'nothing (every file was there)'}")
