"""The deploy gate's verdict: whether a freshly registered version is good enough to be served.

The gate itself (metric, threshold, direction) is declared by the notebook's config cell and read
by the notebook contract (`GateSettings`); this module judges a run's metrics against it and says
why in a sentence the pipeline shows. A metric the run did not log fails the gate: serving a model
nobody measured is worse than not serving it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_core.notebook_contract import DEFAULT_GATE_METRIC, GateSettings


@dataclass(frozen=True)
class GateResult:
    """The decision, the value it was made on, and a sentence a person can read."""

    passed: bool
    reason: str
    value: float | None = None


def describe_gate(gate: GateSettings) -> str:
    """E.g. `accuracy >= 0.8` or `rmse <= 60`."""
    op = ">=" if gate.direction == "max" else "<="
    return f"{gate.metric} {op} {gate.threshold:g}"


def default_gate(min_accuracy: float) -> GateSettings:
    """The gate of a notebook that names none: accuracy >= MIN_ACCURACY_THRESHOLD."""
    return GateSettings(DEFAULT_GATE_METRIC, float(min_accuracy), "max")


def evaluate_gate(gate: GateSettings, metrics: Mapping[str, Any]) -> GateResult:
    """Compare the run's gate metric with the gate's bound."""
    rule = describe_gate(gate)
    raw = metrics.get(gate.metric)
    if raw is None:
        logged = ", ".join(sorted(metrics)) or "none"
        return GateResult(
            False, f"gate {rule} failed: metric {gate.metric!r} was not logged (logged: {logged})"
        )
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return GateResult(False, f"gate {rule} failed: {gate.metric} = {raw!r} is not a number")
    if math.isnan(value):
        return GateResult(False, f"gate {rule} failed: {gate.metric} is NaN", value)
    passed = gate.passes(value)
    verdict = "passed" if passed else "failed"
    return GateResult(passed, f"gate {rule} {verdict}: {gate.metric} = {value:g}", value)
