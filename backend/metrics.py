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
