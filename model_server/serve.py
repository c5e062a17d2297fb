"""Start a model server: MODEL_SERVER_WORKERS uvicorn processes sharing one port.

    python -m model_server.serve --host 0.0.0.0 --port 8001

Predicting is CPU work done one request at a time per event loop, so one process uses one core
however many the machine has. uvicorn's supervisor binds the port once and starts the processes
on it (the kernel hands each new connection to one of them), restarts one that dies, and stops
them all on SIGTERM. Each runs the whole app (model_server/app.py): it follows the registry,
swaps and reconciles on its own and reports as one process of this server
(model_server/process_group.py), so that a deploy waits for every one of them.

The processes share a folder made here and removed at exit: their readiness markers
(model_server/process_group.py) and their Prometheus metrics, joined by prometheus-client's
multiprocess mode (each process writes its values to files there; any process answering
/metrics sums them; fresh, because files of an earlier run would add its counts to this one's).
With one process, none of that: uvicorn runs the app in this process, as `uvicorn --factory`
would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from mlops_core.launch_commands import LOOPBACK, MODEL_SERVER_APP
from mlops_core.settings import Settings
from model_server.process_group import (
    GROUP_DIR_VARIABLE,
    GROUP_SIZE_VARIABLE,
    MULTIPROC_DIR_VARIABLE,
    READY_FOLDER,
    worker_count,
)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m model_server.serve", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=settings.model_server_port)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    args = parser.parse_args(argv)
    workers = worker_count(settings)
    os.environ[GROUP_SIZE_VARIABLE] = str(workers)
    if workers > 1 and not settings.model_server_replica_id:
        # The server's id, shared by its processes (each reports as server/pid).
        os.environ["MODEL_SERVER_REPLICA_ID"] = f"{socket.gethostname()}:{os.getpid()}"
    with server_folder(workers):
        uvicorn.run(
            MODEL_SERVER_APP,
            factory=True,
            host=args.host,
            port=args.port,
            workers=workers if workers > 1 else None,
            log_level=args.log_level,
        )


@contextmanager
def server_folder(workers: int) -> Iterator[Path | None]:
    """The folder this server's processes share while it runs (None: one process, none).

    An operator's PROMETHEUS_MULTIPROC_DIR is used for the metrics as given, emptied first;
    otherwise they go to a private subfolder (0700, as mkdtemp makes it).
    """
    given = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
    if workers == 1:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="mlops-model-server-"))
    (folder / READY_FOLDER).mkdir()
    os.environ[GROUP_DIR_VARIABLE] = str(folder)
    if not given:
        (folder / "metrics").mkdir()
        os.environ[MULTIPROC_DIR_VARIABLE] = str(folder / "metrics")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
