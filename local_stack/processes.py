"""The processes a stack started, found through /proc, so `down` can prove none is left."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; fields after its ')' are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def with_descendants(roots: Iterable[int]) -> set[int]:
    """The given pids and every process below them (Jupyter kernels of a worker included)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parent_map().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid > 0]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    """Running and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): tells a pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def terminate_groups(pids: Iterable[int], timeout: float) -> set[int]:
    """SIGTERM each pid's process group, SIGKILL after `timeout`; return pids still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        pids = wait_gone(set(pids), timeout)
        if not pids:
            break
    return set(pids)


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait for the pids to end; return those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid for pid in left if alive(pid)}
    return left


def kill(pids: Iterable[int]) -> None:
    """SIGKILL each pid (only pids this stack started are ever passed here)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
