"""The model server's own Prometheus metrics (seed 001's names), and where they are counted.

Every predict path (`/predict/{name}`, Open Inference Protocol infer, MLflow's `/invocations`)
records through the functions below from the one data plane (model_server/data_plane.py), so a
prediction is counted the same way whichever protocol carried it. The
model label is always a served model's name, never one a client made up (a request for an
unknown model is counted by `api_requests_total` with its 404, not here), which keeps the series
bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mlops_core.prediction_log import ErrorReason

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
