"""`python -m avatar_devstack [--demo]`: run the whole stack in the foreground (`make run`).

Ctrl-C (or SIGTERM) stops every child cleanly. A child that dies is reported by name and the
rest of the stack is stopped, so a broken stack never looks healthy.
"""

import argparse
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType

from avatar_devstack.ports import Ports
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import MissingBinary, Stack, oidc_provider_unavailable
from avatar_devstack.supervisor import ChildFailed


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(prog="avatar_devstack", description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="also start the upstream emulators and use them"
    )
    args = parser.parse_args()
    settings = StackSettings()
    ports = Ports.from_settings(settings, args.demo)
    if ports.oidc_provider and (reason := oidc_provider_unavailable()):
        # The rest of the demo needs no Node: it runs, anonymous only.
        warning = f"warning: {reason}: the demo starts without its OpenID provider"
        print(f"{warning}, so sign-in is unavailable", file=sys.stderr, flush=True)
        ports = replace(ports, oidc_provider=None)
    stack = Stack(ports, settings, Path(settings.data_dir))
    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: terminal closed
        signal.signal(stop_signal, _raise_stop)
    try:
        stack.start()
        print(f"Avatar Forge is running on {stack.gateway_url}  (Ctrl-C stops it)", flush=True)
        while not (dead := stack.supervisor.dead()):
            time.sleep(0.5)
        for child in dead:
            print(f"{child.name} died (exit code {child.process.returncode})", file=sys.stderr)
        return 1
    except (ChildFailed, MissingBinary) as exc:
        print(f"could not start the stack: {exc}", file=sys.stderr)
        return 1
    except _Stop as stop:
        print(f"\n{stop}: stopping", file=sys.stderr)
        return 0
    finally:
        # A second Ctrl-C (or a SIGTERM forwarded by make or uv) must not cut the cleanup short.
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
