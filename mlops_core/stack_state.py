"""Where the local stack (`make up`, `make demo`) runs, remembered under MLOPS_HOME.

`up` moves a taken default port to a free one, so the ports in the settings are not always
the ones in use: `up` writes the ones it chose here, and `make status|logs|down`, a later `up`
and the CLI read them back to find the same stack. Only the local stack writes this file; a
deployed platform has none, and its clients are given the API's URL.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from mlops_core.settings import Settings

STATE_FILE: Final = Path("run") / "stack.json"
LOOPBACK: Final = "127.0.0.1"
# The service name the backend's port is kept under (the local stack's name for it).
BACKEND_SERVICE: Final = "backend"


@dataclass(frozen=True)
class StackState:
    """What the last `up` in a home chose and started."""

    # service name → the port it was started on.
    ports: dict[str, int]
    external_redis: bool = False
    monitoring: bool = False
    # program → (pid, start time in clock ticks): lets `down` stop exactly these processes
    # should supervisord itself have been killed.
    programs: dict[str, tuple[int, int | None]] = field(default_factory=dict)

    @property
    def api_url(self) -> str | None:
        port = self.ports.get(BACKEND_SERVICE)
        return None if port is None else f"http://{LOOPBACK}:{port}"


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def read_state(home: Path) -> StackState | None:
    """The state the last `up` in `home` wrote; None when there is none (or it is unreadable)."""
    try:
        raw = json.loads(state_path(home).read_text())
        return StackState(
            ports={str(name): int(port) for name, port in raw.get("ports", {}).items()},
            external_redis=bool(raw.get("external_redis", False)),
            monitoring=bool(raw.get("monitoring", False)),
            programs={
                str(name): (int(pid), None if started is None else int(started))
                for name, (pid, started) in raw.get("programs", {}).items()
            },
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_state(home: Path, state: StackState) -> None:
    """Replace the state at once (a reader never sees half a file)."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1))
    tmp.replace(path)


def remembered_api_url(home: Path | None = None) -> str | None:
    """The API URL of the local stack last started in `home` (default: MLOPS_HOME), or None.

    For clients such as the CLI, when no URL was given: the stack may have moved its backend
    off the default port.
    """
    if home is None:
        home = Settings().mlops_home
    state = read_state(home.resolve())
    return None if state is None else state.api_url
