"""Who a model-server process is when one server runs several processes on one port.

`python -m model_server.serve` (model_server/serve.py) starts MODEL_SERVER_WORKERS uvicorn
processes sharing the server's port; each follows the registry on its own (hot swap, reconcile,
reports) with model processes of its own. A deploy is served only once *every* process has
swapped, so each reports under an id of its own (`server/pid`) and says which server it belongs
to and how many processes that server runs: readers (mlops_core/model_events.py) then count a
server as serving a version when all of its processes report it.

The launcher hands the count to its processes in GROUP_SIZE_VARIABLE, an internal variable and
not a setting: a process started some other way (plain `uvicorn`) is a server of one process,
whatever MODEL_SERVER_WORKERS says, so its reports can never wait for processes that do not exist.

The server is ready (GET /ready) when all of its processes are: any of them may take the next
connection. Each marks its first completed sync with a file named by its pid in the server's
folder (GROUP_DIR_VARIABLE), which any process counts (the live ones only: uvicorn replaces a
process that died, and the new one is not ready until it has loaded what is served).
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops_core.settings import Settings

GROUP_SIZE_VARIABLE = "MLOPS_MODEL_SERVER_PROCESSES"
GROUP_DIR_VARIABLE = "MLOPS_MODEL_SERVER_DIR"
# Where prometheus-client's multiprocess mode keeps each process's values; read once, when
# prometheus-client is imported, so the launcher sets it before any process imports that.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
READY_FOLDER = "ready"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class ReplicaIdentity:
    """This process's id in reports, its server's id, and how many processes that server runs."""

    replica: str
    server: str
    processes: int
    folder: Path | None = None  # the server's folder (None: a server of one process)

    @classmethod
    def of_this_process(cls, settings: Settings) -> ReplicaIdentity:
        processes = max(1, int(os.environ.get(GROUP_SIZE_VARIABLE) or 1))
        server = settings.model_server_replica_id or f"{socket.gethostname()}:{os.getpid()}"
        if processes == 1:
            return cls(replica=server, server=server, processes=1)
        folder = os.environ.get(GROUP_DIR_VARIABLE)
        return cls(
            replica=f"{server}/{os.getpid()}",
            server=server,
            processes=processes,
            folder=Path(folder) if folder else None,
        )

    def mark_ready(self, ready: bool) -> None:
        """Say (or stop saying) that this process has done its first sync."""
        if self.folder is None:
            return
        marker = self.folder / READY_FOLDER / str(os.getpid())
        if ready:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def processes_ready(self) -> int:
        """How many live processes of this server have done their first sync (a server of one
        process: 1, its own readiness being known to the caller)."""
        if self.folder is None:
            return self.processes
        pids = (int(p.name) for p in (self.folder / READY_FOLDER).iterdir() if p.name.isdigit())
        return sum(1 for pid in pids if psutil.pid_exists(pid))


def worker_count(settings: Settings) -> int:
    """MODEL_SERVER_WORKERS, or (0) one process per CPU this server may use."""
    return settings.model_server_workers or usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on, bounded by its cgroup's CPU quota when it has one.

    Not os.cpu_count(): in a container that is the host's count, and a pod limited to two CPUs
    on a 64-core node must not start 64 servers (each with its own model processes).
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))
