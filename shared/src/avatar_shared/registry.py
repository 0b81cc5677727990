"""The one list of the apps that make up Avatar Forge: the five services and the edge.

The dev runner, the settings docs, the peer URLs (`settings.PeerUrls`), the gateway's routes in
every environment (rendered by `make routes`, see avatar_devstack.routes) and the tests are
all derived from it. Factories and settings classes are named by import path, so this
package (which every service depends on) imports none of them.
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
    # The public paths the gateway routes to it: `/api/chat` is that path and every path
    # below it; one ending in `/` is only the paths below it (the path itself is no one's).
    prefixes: tuple[str, ...]
    description: str  # what it does, for its OpenAPI document
    # It streams its responses (SSE, audio): the gateway cannot buffer its requests to limit
    # their size, so the app limits request bodies itself (see avatar_shared.body_limit).
    streams: bool = False
    # Its answers wait on a GPU upstream (an LLM, speech): the gateway waits longer for them.
    # Not gen3d: its GPU work is a background job, and a request only queues it.
    gpu_bound: bool = False
    # The gateway logs its requests. Not auth's: the sign-in callback's query holds the OAuth
    # code (auth logs those requests itself, by path without the query).
    access_logs: bool = True
    # Paths below its prefixes that are for the stack itself (the edge's health, the dev
    # runner), never for the public: the gateway answers them with the edge's 404 and the
    # merged OpenAPI document leaves them out. Peers call them on the app's own address.
    internal_paths: tuple[str, ...] = ()

    @property
    def factory(self) -> str:
        """uvicorn's `--factory` argument."""
        return f"{self.package}.app:create_app"


def _service(
    name: str,
    settings: str,
    port: int,
    prefixes: tuple[str, ...],
    description: str,
    *,
    streams: bool = False,
    gpu_bound: bool = False,
    access_logs: bool = True,
    internal_paths: tuple[str, ...] = (),
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
        streams=streams,
        gpu_bound=gpu_bound,
        access_logs=access_logs,
        internal_paths=internal_paths,
    )


SERVICES: tuple[AppSpec, ...] = (
    _service(
        "chat", "ChatSettings", 8011, ("/api/chat", "/api/memories"),
        "Role-play conversations with characters over Ollama or vLLM, and what the "
        "characters remember of their users.",
        streams=True, gpu_bound=True,
    ),
    _service(
        "tts", "TtsSettings", 8012, ("/api/tts", "/mnt/user_assets/"),
        "Speech in a character's voice over GPT-SoVITS; per-user audio files.",
        streams=True, gpu_bound=True,
    ),
    _service(
        "characters", "CharactersSettings", 8013, ("/api/characters", "/api/personas"),
        "Preset and user-made characters; Character Card V2/V3 import and export; user "
        "personas.",
    ),
    _service(
        "gen3d", "Gen3dSettings", 8014, ("/api/generate",),
        "Turns a picture into a 3D avatar (GLB) in a background job.",
        # The queue's depth and workers: the edge's /api/health and the dev runner read it.
        internal_paths=("/api/generate/queue",),
    ),
    _service(
        "auth", "AuthSettings", 8015, ("/api/auth/",),
        "Google sign-in; issues the JWT every service verifies.",
        access_logs=False,
    ),
)  # fmt: skip
# The services' calls to one another that are no caller's (the same path on every service
# that answers it, e.g. avatar_shared.adoption's `/internal/accounts/adopt`): outside every
# public prefix, and kept off the gateway all the same (its 404, as for the probes), so that
# only a peer on the backend network reaches them; each also checks the call is a peer's.
PEER_PREFIX = "/internal/"
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
