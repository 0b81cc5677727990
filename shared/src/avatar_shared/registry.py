"""The one list of the apps that make up Avatar Forge: the five services and the edge.

The dev runner, the settings docs, the peer URLs (`settings.PeerUrls`) and the tests are all
derived from it; a test checks the gateway's `dynamic.yml` and `deploy/compose.yml` against
it. Factories and settings classes are named by import path, so this package (which every
service depends on) imports none of them.
"""

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AppSpec:
    name: str  # also the env prefix: CHAT_URL, CHAT_URLS
    package: str  # the Python package, avatar_<name>
    project: str  # the distribution in its pyproject.toml
    folder: str  # where it lives in the repository
    settings_class: str  # module:Class
    port: int  # its port under `make run`
    prefixes: tuple[str, ...]  # the public path prefixes the gateway routes to it
    description: str  # what it does, for its OpenAPI document

    @property
    def factory(self) -> str:
        """uvicorn's `--factory` argument."""
        return f"{self.package}.app:create_app"


def _service(
    name: str, settings: str, port: int, prefixes: tuple[str, ...], description: str
) -> AppSpec:
    return AppSpec(
        name=name,
        package=f"avatar_{name}",
        project=f"avatar-{name}",
        folder=f"services/{name}",
        settings_class=f"avatar_{name}.settings:{settings}",
        port=port,
        prefixes=prefixes,
        description=description,
    )


SERVICES: tuple[AppSpec, ...] = (
    _service(
        "chat", "ChatSettings", 8011, ("/api/chat",),
        "Role-play conversations with characters over Ollama or vLLM.",
    ),
    _service(
        "tts", "TtsSettings", 8012, ("/api/tts", "/mnt/user_assets"),
        "Speech in a character's voice over GPT-SoVITS; per-user audio files.",
    ),
    _service(
        "characters", "CharactersSettings", 8013, ("/api/characters",),
        "Preset and user-made characters; Character Card V2/V3 import and export.",
    ),
    _service(
        "gen3d", "Gen3dSettings", 8014, ("/api/generate",),
        "Turns a picture into a 3D avatar (GLB) in a background job.",
    ),
    _service(
        "auth", "AuthSettings", 8015, ("/api/auth",),
        "Google sign-in; issues the JWT every service verifies.",
    ),
)  # fmt: skip
# The gateway's own app: /, the docs, the aggregate health, and every path no service claims.
EDGE = AppSpec(
    name="edge",
    package="avatar_edge",
    project="avatar-edge",
    folder="gateway",
    settings_class="avatar_edge.settings:EdgeSettings",
    port=8010,
    prefixes=("/",),
    description="The gateway's own app: the root, the merged docs and the aggregate health.",
)
# In start order: the edge last, as it reads the others.
APPS: tuple[AppSpec, ...] = (*SERVICES, EDGE)
APPS_BY_NAME = {spec.name: spec for spec in APPS}


def app_spec(name: str) -> AppSpec:
    try:
        return APPS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an app of the registry") from None


def load(reference: str) -> Any:
    """The object a `module:attribute` reference names."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
