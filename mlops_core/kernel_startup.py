"""IPython startup code for a pipeline's kernel: every top-level MLflow run is the pipeline's run.

Installed as a startup file of the kernel's IPython profile by the execute phase and by `mlops run`
(mlops_core/notebook_runner.py; its source is copied, so the kernel needs nothing of the platform
on its path). MLflow resumes the run named
by MLFLOW_RUN_ID only once: `start_run` deletes the variable, so after a notebook's first run
ends (`with mlflow.start_run():` closing, or `mlflow.sklearn.autolog()` ending the run it made
for `fit`) the next `mlflow.log_metric(...)` silently starts a new run elsewhere and the pipeline
never sees the metric its gate needs. This keeps the pipeline's run id for every top-level
`start_run` (nested runs still get runs of their own), without importing MLflow early: a one-shot
import hook patches `mlflow.tracking.fluent` when the notebook imports MLflow.

It also puts the packages of the notebook's requirements.txt, installed for this pipeline
(worker/requirements_install.py), on the kernel's import path, and ends the kernel without the
interpreter's teardown once its exit handlers have run (`exit_after_handlers`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import signal
import site
import sys
from types import ModuleType
from typing import Any

_FLUENT = "mlflow.tracking.fluent"
_VARIABLE = "MLFLOW_RUN_ID"


class _PipelineRunId:
    """Stands in for MLflow's MLFLOW_RUN_ID variable inside `mlflow.tracking.fluent`."""

    def __init__(self, original: Any, run_id: str, fluent: ModuleType) -> None:
        self._original = original
        self._run_id = run_id
        self._fluent = fluent
        self.name = _VARIABLE

    def get(self) -> str | None:
        if self._fluent.active_run() is not None:
            return None  # a nested run: a run of its own, as MLflow does
        # start_run deletes the variable right after reading it: have it there to delete.
        os.environ[_VARIABLE] = self._run_id
        return self._run_id

    def is_set(self) -> bool:
        return True

    def unset(self) -> None:
        """Ending a run must not forget the pipeline's run (MLflow unsets it in end_run)."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._original, attribute)


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, run_id: str) -> None:
        self._inner = inner
        self._run_id = run_id

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        module.MLFLOW_RUN_ID = _PipelineRunId(module.MLFLOW_RUN_ID, self._run_id, module)


class _FluentFinder(importlib.abc.MetaPathFinder):
    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _FLUENT:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, self._run_id)
        return spec


def install(run_id: str | None) -> None:
    if run_id and _FLUENT not in sys.modules:
        sys.meta_path.insert(0, _FluentFinder(run_id))


def name_cpu_limit(seconds: str | None) -> None:
    """Turn the sandbox's CPU soft limit (SIGXCPU, fatal by default) into an error naming it.

    The cell fails with a message the pipeline shows as is; code stuck in C that never
    returns to Python is killed at the hard limit a few seconds later.
    """
    if not seconds:
        return

    def exceeded(signum: int, frame: Any) -> None:
        raise RuntimeError(
            f"kernel exceeded its CPU time limit of {seconds} s (KERNEL_CPU_SECONDS)"
        )

    signal.signal(signal.SIGXCPU, exceeded)


def add_requirements(paths: str | None) -> None:
    """Make the packages of the notebook's requirements.txt importable, after the kernel's own.

    Appended, not prepended (PYTHONPATH would put them first): nothing installed there can
    shadow a package of the kernel's. `site.addsitedir` also reads their `.pth` files, and
    joblib's and multiprocessing's workers (GridSearchCV with n_jobs=-1) inherit the path.
    """
    for path in (paths or "").split(os.pathsep):
        if path:
            site.addsitedir(path)


# What `open()` returns for writing: text (flushed into its buffer first) and binary.
_BUFFERED_FILES = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)


def exit_after_handlers() -> None:
    """End the kernel as soon as the exit handlers of the notebook's libraries have run.

    When the run's last cell is done the kernel is shut down gracefully, and tearing down
    IPython's namespaces and every module (pandas, scikit-learn, MLflow) took ~1.3 s that a
    pipeline waited through for nothing. Registered here, before the notebook imports anything,
    this handler runs after every handler registered later (atexit runs the last registered
    first): MLflow still ends the runs a notebook left open and flushes asynchronous logging.
    Files the notebook left open are flushed first, as their finalizers would have; IPython's
    history, which dies with the kernel's sandbox, is not saved.
    """

    def exit_now() -> None:
        for found in gc.get_objects():
            if type(found) in _BUFFERED_FILES:  # exact types: an ABC check per object is slow
                with contextlib.suppress(Exception):  # one that cannot flush is lost anyway
                    if not found.closed and found.writable():
                        found.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    atexit.register(exit_now)


if __name__ == "__main__":
    exit_after_handlers()
    install(os.environ.get(_VARIABLE))
    add_requirements(os.environ.get("MLOPS_REQUIREMENTS_PATH"))
    name_cpu_limit(os.environ.get("MLOPS_KERNEL_CPU_SECONDS"))
