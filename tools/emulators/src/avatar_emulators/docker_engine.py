"""Docker Engine API emulator (tests only): what Traefik's docker provider reads, so the compose
gateway's labels can be tested with the real Traefik where no Docker engine runs.

Speaks the Engine API as documented (docs.docker.com/reference/api/engine): `GET|HEAD /_ping`
with the `Api-Version` header clients negotiate with; `GET /version`; `GET /containers/json`
(running ones, or every one with `all`); `GET /containers/{id}/json` (404 `{"message": "No such
container: ..."}` otherwise); and `GET /events`, a stream of JSON messages (`filters` by type),
held open. Versioned paths (`/v1.51/...`) are the same endpoints.

The test drives the "engine" under `/_emulator/`: a container starts (`PUT`, with its labels,
networks and health), its health changes (`POST .../health`), it stops (`DELETE`: exited,
still listed with `all`), each with the events `docker` itself sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

API_VERSION = "1.51"  # Docker Engine 28
ENGINE_VERSION = "28.5.1"
MIN_API_VERSION = "1.24"


class ContainerSpec(BaseModel):
    name: str
    labels: dict[str, str] = {}
    networks: dict[str, str] = {}  # network name -> the container's address on it
    health: str | None = "healthy"  # "starting" until its first check; None: no HEALTHCHECK


class HealthChange(BaseModel):
    status: str


@dataclass
class Container:
    id: str
    spec: ContainerSpec
    status: str = "running"
    health: str | None = None
    started: float = field(default_factory=time.time)

    def summary(self) -> dict:
        """An item of `GET /containers/json`."""
        return {
            "Id": self.id,
            "Names": [f"/{self.spec.name}"],
            "Image": "avatar-forge/app",
            "Command": "uvicorn",
            "Created": int(self.started),
            "Ports": [],
            "Labels": self.spec.labels,
            "State": self.status,
            "Status": self._status_text(),
            "HostConfig": {"NetworkMode": self._network_mode()},
            "NetworkSettings": {"Networks": self._networks()},
            "Mounts": [],
        }

    def inspect(self) -> dict:
        """`GET /containers/{id}/json`."""
        running = self.status == "running"
        state = {
            "Status": self.status,
            "Running": running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": 4242 if running else 0,
            "ExitCode": 0,
            "Error": "",
            "StartedAt": _timestamp(self.started),
            "FinishedAt": "0001-01-01T00:00:00Z",
        }
        if self.health is not None:
            state["Health"] = {"Status": self.health, "FailingStreak": 0, "Log": []}
        return {
            "Id": self.id,
            "Created": _timestamp(self.started),
            "Path": "uvicorn",
            "Args": [],
            "State": state,
            "Image": "sha256:" + "0" * 64,
            "Name": f"/{self.spec.name}",
            "RestartCount": 0,
            "HostConfig": {"NetworkMode": self._network_mode()},
            "Config": {
                "Hostname": self.id[:12],
                "Image": "avatar-forge/app",
                "Labels": self.spec.labels,
                "ExposedPorts": {"8000/tcp": {}},
            },
            "NetworkSettings": {"Ports": {}, "Networks": self._networks()},
        }

    def _status_text(self) -> str:
        if self.status != "running":
            return "Exited (0) 1 second ago"
        return f"Up 1 second ({self.health})" if self.health else "Up 1 second"

    def _network_mode(self) -> str:
        return next(iter(self.spec.networks), "bridge")

    def _networks(self) -> dict:
        return {
            name: {
                "IPAddress": address,
                "IPPrefixLen": 8,
                "Gateway": "",
                "NetworkID": name,
                "EndpointID": f"{self.id[:12]}-{name}",
                "MacAddress": "",
                "Aliases": [],
                "DNSNames": [self.spec.name],
            }
            for name, address in self.spec.networks.items()
        }


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000000000Z"


def _no_such_container(container_id: str) -> JSONResponse:
    return JSONResponse({"message": f"No such container: {container_id}"}, status_code=404)


def create_app() -> FastAPI:
    app = FastAPI(title="Docker Engine API emulator")
    containers: dict[str, Container] = {}
    listeners: set[asyncio.Queue[dict]] = set()

    def emit(container: Container, action: str) -> None:
        now = time.time()
        attributes = {**container.spec.labels, "name": container.spec.name}
        message = {
            "status": action,
            "id": container.id,
            "from": "avatar-forge/app",
            "Type": "container",
            "Action": action,
            "Actor": {"ID": container.id, "Attributes": attributes},
            "scope": "local",
            "time": int(now),
            "timeNano": int(now * 1e9),
        }
        for queue in listeners:
            queue.put_nowait(message)

    ping_headers = {
        "Api-Version": API_VERSION,
        "Docker-Experimental": "false",
        "Ostype": "linux",
        "Builder-Version": "2",
        "Swarm": "inactive",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }

    @app.api_route("/_ping", methods=["GET", "HEAD"])
    @app.api_route("/v{version}/_ping", methods=["GET", "HEAD"])
    async def ping(request: Request) -> Response:
        body = b"" if request.method == "HEAD" else b"OK"
        return Response(body, media_type="text/plain; charset=utf-8", headers=ping_headers)

    @app.get("/version")
    @app.get("/v{version}/version")
    async def version() -> dict:
        return {
            "Platform": {"Name": "Docker Engine - Community"},
            "Version": ENGINE_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "6.1.0",
            "GoVersion": "go1.24.9",
            "GitCommit": "emulator",
        }

    @app.get("/containers/json")
    @app.get("/v{version}/containers/json")
    async def list_containers(every: str = Query("", alias="all")) -> list[dict]:
        show_all = every.lower() in ("1", "true")
        return [c.summary() for c in containers.values() if show_all or c.status == "running"]

    @app.get("/containers/{container_id}/json")
    @app.get("/v{version}/containers/{container_id}/json")
    async def inspect_container(container_id: str) -> Response:
        container = containers.get(container_id)
        if container is None:
            return _no_such_container(container_id)
        return JSONResponse(container.inspect())

    @app.get("/events")
    @app.get("/v{version}/events")
    async def events(filters: str = "{}") -> StreamingResponse:
        wanted_types = set(json.loads(filters).get("type", []))
        queue: asyncio.Queue[dict] = asyncio.Queue()
        listeners.add(queue)

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await queue.get()
                    if not wanted_types or message["Type"] in wanted_types:
                        yield json.dumps(message).encode() + b"\n"
            finally:
                listeners.discard(queue)

        return StreamingResponse(stream(), media_type="application/json")

    @app.put("/_emulator/containers/{container_id}")
    async def start_container(container_id: str, spec: ContainerSpec) -> dict:
        container = Container(container_id, spec, health=spec.health)
        containers[container_id] = container
        emit(container, "create")
        emit(container, "start")
        if spec.health is not None:
            emit(container, f"health_status: {spec.health}")
        return container.inspect()

    @app.post("/_emulator/containers/{container_id}/health")
    async def change_health(container_id: str, change: HealthChange) -> Response:
        container = containers.get(container_id)
        if container is None:
            return _no_such_container(container_id)
        container.health = change.status
        emit(container, f"health_status: {change.status}")
        return JSONResponse(container.inspect())

    @app.delete("/_emulator/containers/{container_id}")
    async def stop_container(container_id: str) -> Response:
        container = containers.get(container_id)
        if container is None:
            return _no_such_container(container_id)
        container.status = "exited"
        emit(container, "die")
        emit(container, "stop")
        return JSONResponse(container.inspect())

    return app
