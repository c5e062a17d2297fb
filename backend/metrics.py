"""Prometheus metrics of the backend, exposed at GET /metrics.

Module-level objects in the default registry: one set per process, which is what a
Prometheus scrape of one backend process expects. Other backend modules add theirs here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WEBHOOK_DELIVERIES = Counter(
    "mlops_webhook_deliveries",
    "GitHub webhook deliveries by outcome "
    "(accepted, redelivered, ignored, ping, unauthorized, unknown_repo, bad_request, too_large).",
    ["outcome"],
)
PIPELINES_CREATED = Counter(
    "mlops_pipelines_created",
    "Pipelines created, by trigger (push, manual, retry).",
    ["trigger"],
)
ENQUEUE_FAILURES = Counter(
    "mlops_enqueue_failures",
    "Sends of a pipeline to the Celery broker that failed (the re-queue loop retries them).",
)
PIPELINES_AWAITING_ENQUEUE = Gauge(
    "mlops_pipelines_awaiting_enqueue",
    "Queued pipelines not yet on the broker, as seen by the last re-queue pass.",
)
PIPELINE_QUEUE_DEPTH = Gauge(
    "mlops_pipeline_queue_depth",
    "Pipelines on the broker that no worker has taken yet (the length of the pipelines queue "
    "in Redis), read by the re-queue loop every REQUEUE_INTERVAL_SECONDS; NaN while Redis does "
    "not answer.",
    # Every backend process reads the same queue: one series, the latest reading.
    multiprocess_mode="mostrecent",
)
PIPELINES_LOST = Counter(
    "mlops_pipelines_lost",
    "Running pipelines whose worker was lost, by what the backend did "
    "(requeued, failed, cancelled).",
    ["outcome"],
)
LIVE_METRIC = Gauge(
    "ml_live_metric",
    "Quality of a version on live traffic with ground truth sent as feedback, by metric "
    "(accuracy for classifiers, mae and rmse otherwise), over the latest labelled window.",
    ["model", "version", "metric"],
)
DRIFT_DETECTED = Gauge(
    "ml_drift_detected",
    "1 when some input feature of the version drifted from its reference at the last check.",
    ["model", "version"],
)
DRIFTED_FEATURES = Gauge(
    "ml_drifted_feature_count",
    "Input features of the version that drifted from its reference at the last check.",
    ["model", "version"],
)

# Known label values start at 0, so that a scraper (and an alert on `increase(...)`) sees the
# series before the first event rather than no data.
for _outcome in (
    "accepted",
    "redelivered",
    "ignored",
    "ping",
    "unauthorized",
    "unknown_repo",
    "bad_request",
    "too_large",
):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _trigger in ("push", "manual", "retry"):
    PIPELINES_CREATED.labels(_trigger)
for _outcome in ("requeued", "failed", "cancelled"):
    PIPELINES_LOST.labels(_outcome)
