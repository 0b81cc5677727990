"""`make demo` on a machine without Node: the stack starts without the demo OpenID provider
(sign-in unavailable, said in one line), and a binary the stack cannot do without is reported
in one line, never with a traceback."""

import sys
from pathlib import Path
from typing import ClassVar

import pytest

from avatar_devstack import __main__ as devstack
from avatar_devstack.ports import Ports
from avatar_devstack.stack import MissingBinary, oidc_provider_unavailable
from avatar_devstack.supervisor import ChildFailed


class FakeStack:
    """Records what main() asked for, starts nothing."""

    made: ClassVar[list["FakeStack"]] = []
    failure: ClassVar[Exception] = ChildFailed("stopped by the test")

    def __init__(self, ports: Ports, *args: object, **kwargs: object) -> None:
        self.ports = ports
        self.stopped = False
        FakeStack.made.append(self)

    def start(self) -> None:
        raise FakeStack.failure

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def no_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with no node on it (nor next to this interpreter, where find_binary looks too)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not (Path(sys.executable).parent / "node").exists()


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> type[FakeStack]:
    FakeStack.made = []
    FakeStack.failure = ChildFailed("stopped by the test")
    monkeypatch.setattr(devstack, "Stack", FakeStack)
    # Signal handlers stay the test runner's.
    monkeypatch.setattr(devstack.signal, "signal", lambda *args: None)
    return FakeStack


def test_without_node_the_oidc_provider_is_said_to_be_unavailable(no_node):
    reason = oidc_provider_unavailable()
    assert reason is not None and "node" in reason


def test_the_demo_starts_without_the_oidc_provider_when_node_is_absent(
    no_node, fake_stack, monkeypatch, capsys
):
    monkeypatch.setattr(sys, "argv", ["avatar_devstack", "--demo"])
    assert devstack.main() == 1  # the fake's start stops it there
    (stack,) = fake_stack.made
    assert stack.ports.emulators  # the rest of the demo is there
    assert stack.ports.oidc_provider is None
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "sign-in" in line]
    assert len(warnings) == 1 and "node" in warnings[0] and "unavailable" in warnings[0]


def test_a_missing_binary_is_one_clear_line_not_a_traceback(fake_stack, monkeypatch, capsys):
    fake_stack.failure = MissingBinary("redis-server not found: run `make install` first")
    monkeypatch.setattr(sys, "argv", ["avatar_devstack"])
    assert devstack.main() == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip() == "could not start the stack: redis-server not found: run `make install` first"
    )
    assert fake_stack.made[0].stopped
