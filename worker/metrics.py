"""The worker's Prometheus metrics: pipelines by end state, phase durations, kernel peak memory.

They are counted in the pool processes that run pipelines (worker/pipeline_runner.py,
worker/phases/execute.py) and served by the worker's main process on WORKER_METRICS_PORT
(worker/metrics_server.py), which sums them over its processes with prometheus-client's
multiprocess mode. Only counters and histograms here: they are the types that mode sums
without a per-metric aggregation choice, and they keep what a recycled pool process counted.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from mlops_core.states import Phase, PipelineStatus

PIPELINES_FINISHED = Counter(
    "mlops_pipelines_finished",
    "Pipelines a worker ran to their end, by final status (success, failed, cancelled). "
    "A pipeline whose worker was lost is counted by the backend (mlops_pipelines_lost_total).",
    ["status"],
)
PHASE_DURATION = Histogram(
    "mlops_pipeline_phase_duration_seconds",
    "Time a phase took, whatever its outcome, by phase. A phase that an earlier attempt of the "
    "pipeline already did is not observed (nothing ran).",
    ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
KERNEL_PEAK_MEMORY = Histogram(
    "mlops_kernel_peak_memory_bytes",
    "Peak resident memory of a notebook run's kernel: the largest process the sandboxed "
    "notebook runner started and waited for (the kernel, or a process the kernel ran).",
    # 64 MiB to 16 GiB in doublings (KERNEL_MEMORY_LIMIT is 4 GiB by default).
    buckets=tuple(float(2**n) for n in range(26, 35)),
)

FINISHED_STATUSES: Final = (
    PipelineStatus.SUCCESS,
    PipelineStatus.FAILED,
    PipelineStatus.CANCELLED,
)

# Every known label value starts at 0, so that a scraper (and an alert on `increase(...)`)
# sees the series before the first pipeline rather than no data.
for _status in FINISHED_STATUSES:
    PIPELINES_FINISHED.labels(_status.value)
for _phase in Phase:
    PHASE_DURATION.labels(_phase.value)


def record_finished(status: PipelineStatus) -> None:
    PIPELINES_FINISHED.labels(status.value).inc()


def record_phase(phase: Phase, seconds: float) -> None:
    PHASE_DURATION.labels(phase.value).observe(seconds)


def record_kernel_peak(rss_bytes: object) -> None:
    """Observe the peak the notebook runner reported; anything but a positive number is
    ignored (the runner's events pass through a pipe the kernel could also write to)."""
    if isinstance(rss_bytes, int) and not isinstance(rss_bytes, bool) and rss_bytes > 0:
        KERNEL_PEAK_MEMORY.observe(rss_bytes)
