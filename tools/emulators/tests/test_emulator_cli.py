"""The `python -m avatar_emulators` command serves a working emulator on the given port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, headers: dict[str, str], timeout_s: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, headers=headers, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_cli_runs_openai_emulator_with_key_and_prefix() -> None:
    port = free_port()
    command = [sys.executable, "-m", "avatar_emulators", "openai", "--port", str(port)]
    command += ["--api-key", "k1", "--path-prefix", "/vllm", "--model", "tiny"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/vllm/v1/models"
        response = wait_for(base, {"Authorization": "Bearer k1"})
        unauthorised = httpx.get(base)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["tiny"]
    assert unauthorised.status_code == 401
    assert f"openai on http://127.0.0.1:{port}" in output
