"""Two versions of a model side by side: what differs in their parameters, metrics and runs.

The question a person asks before serving or rolling back is "what changed between v1 and v2":
which hyperparameters, what that did to each metric, and what the runs were given (commit,
notebook, data). Every row says whether the two sides differ, so a page marks differences
without comparing values itself, and a metric says which side is better where the gate gives
the direction. No HTTP here: the model service builds it, the route only returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from backend.model_views import VersionView
from mlops_core.model_registry import TAG_NOTEBOOK_PATH, VersionInfo

Side = Literal["a", "b"]


class Difference(BaseModel):
    """One parameter or fact of the run, on both sides (None: that side has none)."""

    name: str
    a: str | None
    b: str | None
    changed: bool
    # Parameters only: the sides on which the trigger gave this value (papermill's override).
    given: list[Side] = []


class MetricDifference(BaseModel):
    """One metric on both sides, and how far B moved from A."""

    name: str
    a: float | None
    b: float | None
    delta: float | None  # b - a, when both logged it
    changed: bool
    gate: bool  # the metric a gate of either version judges
    better: Side | None  # by that gate's direction; None when equal or no direction known


class VersionComparison(BaseModel):
    """Answer of GET /models/{name}/compare?a=..&b=..."""

    name: str
    a: VersionView
    b: VersionView
    params: list[Difference]
    metrics: list[MetricDifference]
    run: list[Difference]
    changed: int  # how many rows differ, all sections together


def compare_versions(
    name: str, a: VersionInfo, b: VersionInfo, view: Callable[[VersionInfo], VersionView]
) -> VersionComparison:
    """The comparison of `a` and `b` (`view` renders each version as the API lists it)."""
    params = [
        Difference(
            name=key,
            a=a.params.get(key),
            b=b.params.get(key),
            changed=a.params.get(key) != b.params.get(key),
            given=[side for side, v in (("a", a), ("b", b)) if key in (v.given_parameters or {})],
        )
        for key in sorted({*a.params, *b.params})
    ]
    metrics = [_metric(key, a, b) for key in sorted({*a.metrics, *b.metrics})]
    run = [
        Difference(name=label, a=read(a), b=read(b), changed=compared and read(a) != read(b))
        for label, read, compared in _RUN_FACTS
    ]
    changed = sum(row.changed for rows in (params, metrics, run) for row in rows)
    return VersionComparison(
        name=name, a=view(a), b=view(b), params=params, metrics=metrics, run=run, changed=changed
    )


def _metric(key: str, a: VersionInfo, b: VersionInfo) -> MetricDifference:
    value_a, value_b = a.metrics.get(key), b.metrics.get(key)
    gates = [g for g in (b.gate, a.gate) if g is not None and g.get("metric") == key]
    delta = value_b - value_a if value_a is not None and value_b is not None else None
    better: Side | None = None
    if gates and delta:
        higher_is_better = gates[0].get("direction") != "min"
        better = "b" if (delta > 0) == higher_is_better else "a"
    return MetricDifference(
        name=key,
        a=value_a,
        b=value_b,
        delta=delta,
        changed=value_a != value_b,
        gate=bool(gates),
        better=better,
    )


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _gate(version: VersionInfo) -> str | None:
    gate = version.gate
    if gate is None:
        return None
    sign = ">=" if gate["direction"] == "max" else "<="
    return f"{gate['metric']} {sign} {gate['threshold']:g}"


def _verdict(version: VersionInfo) -> str | None:
    verdict = version.verdict
    if verdict is None:
        return None
    return "passed" if verdict["passed"] else f"below gate: {verdict.get('reason')}"


def _duration(version: VersionInfo) -> str | None:
    run = version.run
    if run is None or run.started_at is None or run.ended_at is None:
        return None
    return f"{(run.ended_at - run.started_at).total_seconds():.0f} s"


# The facts of each version's run, in the order a page lists them, and whether a difference
# counts (two runs never start at the same time or take the same time: shown, not marked).
_RUN_FACTS: list[tuple[str, Callable[[VersionInfo], str | None], bool]] = [
    ("commit", lambda v: _text(v.commit), True),
    ("branch", lambda v: _text(v.branch), True),
    ("repository", lambda v: _text(v.repo), True),
    ("notebook", lambda v: _text(v.tags.get(TAG_NOTEBOOK_PATH)), True),
    ("notebook VERSION", lambda v: _text(v.notebook_version), True),
    ("data sets", lambda v: ", ".join(v.run.datasets) if v.run and v.run.datasets else None, True),
    ("gate", _gate, True),
    ("gate verdict", _verdict, True),
    ("pipeline", lambda v: _text(v.pipeline_id), False),
    ("run started", lambda v: _text(v.run.started_at if v.run else None), False),
    ("run took", _duration, False),
]
