"""`make run`'s runner as a user meets it: it starts the stack and prints the URL, Ctrl-C stops
every child, and a child that dies is reported by name."""

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis

from avatar_devstack.environment import stack_env
from avatar_devstack.ports import Ports, free_port, port_open
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack
from avatar_devstack.supervisor import ChildFailed
from avatar_shared.registry import APPS_BY_NAME

STARTUP_LIMIT_S = 20


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    ports = {name: free_port() for name in [*APPS_BY_NAME, "gateway", "redis"]}
    env = {
        **os.environ,
        "GATEWAY_PORT": str(ports["gateway"]),
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "DATA_DIR": str(tmp_path),
        **{f"{name.upper()}_URL": f"http://127.0.0.1:{ports[name]}" for name in APPS_BY_NAME},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "avatar_devstack"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_banner(process, f"running on http://127.0.0.1:{ports['gateway']}")
        root = httpx.get(f"http://127.0.0.1:{ports['gateway']}/", trust_env=False)
        assert root.text == "Avatar Forge Backend Running"
        yield process, ports
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for_banner(process: subprocess.Popen[str], banner: str) -> None:
    """The runner prints its URL once everything answers; children's logs share its stdout."""
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_LIMIT_S
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):  # raw reads: nothing waits in a Python buffer
                seen += os.read(process.stdout.fileno(), 65536)
            if banner.encode() in seen:
                return
            assert process.poll() is None, "the runner exited during start-up"
    raise AssertionError(f"no '{banner}' within {STARTUP_LIMIT_S}s")


def test_ctrl_c_stops_every_child(runner):
    process, ports = runner
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=20)
    assert process.returncode == 0
    assert [name for name, port in ports.items() if port_open(port)] == []


def test_children_do_not_outlive_a_killed_runner(runner):
    process, ports = runner
    process.kill()  # no chance to clean up
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(port_open(p) for p in ports.values()):
        time.sleep(0.2)
    assert [name for name, port in ports.items() if port_open(port)] == []


def test_a_dead_child_is_named(runner):
    process, ports = runner
    pattern = f"avatar_chat.app:create_app --host 127.0.0.1 --port {ports['chat']}"
    subprocess.run(["pkill", "-KILL", "-f", pattern], check=True)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "chat died" in stderr
    # The rest of the stack goes down with it rather than looking healthy.
    assert not port_open(ports["gateway"])


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(replace(Ports.free(emulators=False), gateway=port), StackSettings(), tmp_path)
        with pytest.raises(ChildFailed, match=f"port\\(s\\) {port} already in use"):
            stack.start()
    assert stack.supervisor.children == []


def test_without_a_provider_sign_in_is_disabled_and_says_so(runner, tmp_path):
    _, ports = runner
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    health = httpx.get(f"{gateway}/api/health", trust_env=False).json()["data"]
    assert health["sign_in"] == "disabled"
    assert health["tts"] == "healthy"  # the local engine speaks: no GPT-SoVITS needed
    login = httpx.get(f"{gateway}/api/auth/google/login", trust_env=False)
    assert login.status_code == 503 and login.json()["error"]["code"] == "sign_in_disabled"
    # Anonymous use works, and the dev signing key was made in the run folder, private.
    made = httpx.post(f"{gateway}/api/characters", json={"name": "n", "persona": "p"})
    assert made.status_code == 201 and "anon_id=" in made.headers["set-cookie"]
    keys = tmp_path / "run" / "auth-signing-keys.json"
    assert keys.stat().st_mode & 0o777 == 0o600


def test_redis_refuses_writes_when_full_rather_than_evict(runner):
    # Characters live only in Redis: under memory pressure they must not be dropped silently.
    _, ports = runner
    with redis.Redis(port=ports["redis"], decode_responses=True) as client:
        settings = client.config_get("maxmemory*")
    assert settings["maxmemory-policy"] == "noeviction"
    assert int(settings["maxmemory"]) == 1024**3


def test_a_demo_s_sign_in_comes_back_to_the_gateway_unless_a_frontend_is_set(tmp_path, monkeypatch):
    """make demo has no frontend: FRONTEND_URL defaults to the gateway (its /auth/callback
    leads to the playground), but one set in the environment or in .env is kept."""
    monkeypatch.chdir(tmp_path)  # a folder with no .env
    ports = Ports.free(emulators=True)
    demo = stack_env(ports, StackSettings(), {})
    assert demo["FRONTEND_URL"] == demo["PUBLIC_BASE_URL"]
    assert stack_env(ports, StackSettings(), {"FRONTEND_URL": "http://app"})["FRONTEND_URL"] == (
        "http://app"
    )
    (tmp_path / ".env").write_text("FRONTEND_URL=http://app-from-dotenv\n")
    assert "FRONTEND_URL" not in stack_env(ports, StackSettings(), {})  # auth reads .env's
    assert "FRONTEND_URL" not in stack_env(Ports.free(emulators=False), StackSettings(), {})
