"""A model process seen from the server: started in the sandbox, asked, stopped.

The server holds secrets (its Redis and MLflow credentials, PREDICT_TOKEN) and answers the
network, so the code inside a registered model (a cloudpickled pipeline can hold any function
from the repository that pushed it) never runs in it: each served version lives in a process
of its own (model_server/model_child.py) started through the same sandbox as the notebook
kernel (mlops_core/sandbox.py), long-lived variant: no network, no CPU-time limit, its model
folder read-only, every other folder of the server's hidden.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlops_core import sandbox
from mlops_core.settings import Settings
from model_server.model_channel import ChannelClosed, ChannelTimeout, receive, send

MODEL_CHILD = "model_server.model_child"
# A model process gets none of the server's environment: only what Python and the numeric
# libraries need to behave (no variable of the server's can hold a secret for it then).
_ENVIRONMENT = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLCONFIGDIR": "/tmp",
}
_STOP_GRACE_SECONDS = 2.0


class ModelProcessError(Exception):
    """The model process crashed, hung or broke the protocol: a fault of the server's side
    (answered 503), never of the request."""


class ModelProcess:
    """One running model process and its channel; `ask` is not thread-safe (callers lock)."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        """Start the process for the (possibly still empty) model folder `folder`.

        Raises SandboxUnavailable when the sandbox is required but cannot run here.
        """
        sandbox.ensure_available(settings)
        folder.chmod(0o755)  # mkdtemp makes it 0700: the sandbox's uid must read it
        command = sandbox.wrap(
            settings,
            [sys.executable, "-I", "-m", MODEL_CHILD],
            work_dir=folder,
            cwd=folder,
            long_lived=True,
        )
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_ENVIRONMENT}
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            cwd=folder,
            close_fds=True,
            # Out of the server's process group: a SIGTERM sent to the group (supervisord's
            # stopasgroup, Ctrl-C) must not end it while the server drains the predictions in
            # flight; the server stops it after (and a dead server takes it along: bubblewrap's
            # --die-with-parent, else the end of its input).
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def ask(
        self, message: dict[str, Any], timeout: float, attach: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Send one request (arrays under `attach` raw, model_channel.py) and return the reply;
        the process is stopped on any fault."""
        assert self._process.stdin is not None and self._process.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            send(self._process.stdin.fileno(), message, deadline, attach)
            reply = receive(self._process.stdout.fileno(), deadline)
        except ChannelTimeout:
            self.stop(graceful=False)
            raise ModelProcessError(
                f"the model process did not answer within {timeout:g} s"
            ) from None
        except (ChannelClosed, OSError, json.JSONDecodeError) as exc:
            self.stop(graceful=False)
            code = self._process.returncode
            raise ModelProcessError(f"the model process exited (code {code}): {exc}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.stop(graceful=False)
            raise ModelProcessError("the model process answered outside the protocol")
        return reply

    def stop(self, *, graceful: bool = True) -> None:
        """End the process: end of input first (it exits by itself), then SIGKILL.

        Killing bubblewrap kills the whole sandbox (--die-with-parent on every process in it).
        """
        if graceful and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(_STOP_GRACE_SECONDS)
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class SpareProcesses:
    """Keeps one model process started ahead, so a deploy does not wait for its imports.

    A model process spends seconds importing MLflow, pandas and scikit-learn before it can
    load anything; a spare has done that already. Its folder is bound into its sandbox when it
    starts, empty: the model is downloaded into it when the spare is taken (a bind mount shows
    what is written there later). Spares are started from one long-lived thread because
    bubblewrap's --die-with-parent ends the sandbox when the *thread* that started it exits.
    """

    def __init__(self, settings: Settings, cache_dir: Path) -> None:
        self._settings = settings
        self._cache_dir = cache_dir
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-process")
        self._lock = threading.Lock()
        self._spare: Future[tuple[ModelProcess, Path]] | None = None

    def take(self) -> tuple[ModelProcess, Path]:
        """A started process and its (empty) folder; the next spare starts at once."""
        with self._lock:
            taken = self._spare or self._starter.submit(self._start)
            self._spare = self._starter.submit(self._start)
        process, folder = taken.result()
        if process.alive:
            return process, folder
        process.stop(graceful=False)  # the spare died while waiting: start one for this load
        return self._starter.submit(self._start_in, folder).result(), folder

    def close(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        self._starter.shutdown(wait=True, cancel_futures=True)
        if spare is not None and spare.done() and spare.exception() is None:
            process, folder = spare.result()
            process.stop()
            _remove(folder)

    def _start(self) -> tuple[ModelProcess, Path]:
        folder = Path(tempfile.mkdtemp(prefix="model-", dir=self._cache_dir))
        try:
            return self._start_in(folder), folder
        except BaseException:
            _remove(folder)
            raise

    def _start_in(self, folder: Path) -> ModelProcess:
        return ModelProcess(self._settings, folder)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
