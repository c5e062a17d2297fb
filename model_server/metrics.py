"""The model server's own Prometheus metrics (seed 001's names), and where they are counted.

Every predict path (`/predict/{name}`, Open Inference Protocol infer, MLflow's `/invocations`)
records through the functions below from the one data plane (model_server/data_plane.py), so a
prediction is counted the same way whichever protocol carried it. The
model label is always a served model's name, never one a client made up (a request for an
unknown model is counted by `api_requests_total` with its 404, not here), which keeps the series
bounded.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
from prometheus_client import Counter, Gauge, Histogram, multiprocess

from mlops_core.prediction_log import ErrorReason
from model_server.process_group import MULTIPROC_DIR_VARIABLE

PREDICTIONS = Counter(
    "ml_predictions",
    "Predictions answered, by model and version (one per request, whatever its rows).",
    ["model", "version"],
)
PREDICTION_DURATION = Histogram(
    "ml_prediction_duration_seconds",
    "Time a prediction took in the model process, by model and version.",
    ["model", "version"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PREDICTION_ERRORS = Counter(
    "ml_prediction_errors",
    "Prediction requests to a served model that failed, by model and reason.",
    ["model", "reason"],
)
MODEL_LOADS = Counter(
    "ml_model_load",
    "Loads of a model version (download, unpickle, warm-up), by model and result.",
    ["model", "result"],
)
MODEL_LOADED = Gauge(
    "ml_model_loaded",
    "1 for the version of each model this replica serves, 0 for versions it served before "
    "(set to 0, not removed: multiprocess mode cannot remove a series).",
    ["model", "version"],
    multiprocess_mode="livemax",
)


SHADOW_DROPPED = Counter(
    "ml_shadow_copies_dropped",
    "Shadow copies of requests not sent to a challenger because too many were still "
    "predicting (model_server/data_plane.py: MAX_SHADOW_COPIES), by model.",
    ["model"],
)


def record_shadow_dropped(model: str) -> None:
    SHADOW_DROPPED.labels(model).inc()


def record_prediction(model: str, version: str, seconds: float) -> None:
    PREDICTIONS.labels(model, version).inc()
    PREDICTION_DURATION.labels(model, version).observe(seconds)


def record_error(model: str, reason: ErrorReason) -> None:
    PREDICTION_ERRORS.labels(model, reason.value).inc()


def record_load(model: str, *, succeeded: bool) -> None:
    MODEL_LOADS.labels(model, "success" if succeeded else "failure").inc()


def record_served(model: str, version: str | None, previous: str | None) -> None:
    """The replica now serves `version` of `model` (None: no longer serves it)."""
    if previous is not None and previous != version:
        MODEL_LOADED.labels(model, previous).set(0)
    if version is not None:
        MODEL_LOADED.labels(model, version).set(1)


def forget_dead_processes() -> None:
    """Drop the live-gauge files of this server's processes that are gone.

    In multiprocess mode (several processes on one port, model_server/serve.py) each process
    writes `ml_model_loaded` to a file of its own; one that crashed (uvicorn starts another)
    would go on saying it serves what it served. Its counters stay: what it counted happened.
    """
    folder = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if not folder:
        return
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not psutil.pid_exists(pid):
            multiprocess.mark_process_dead(pid, folder)


def forget_this_process() -> None:
    """At a clean stop: this process's live gauges no longer describe anything."""
    if os.environ.get(MULTIPROC_DIR_VARIABLE):
        multiprocess.mark_process_dead(os.getpid())
