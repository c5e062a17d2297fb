"""The deploy gate's verdict: whether a freshly registered version is good enough to be served.

The gate itself (metric, threshold, direction) is declared by the notebook's config cell and read
by the notebook contract (`GateSettings`); this module judges a run's metrics against it and says
why in a sentence the pipeline shows. A metric the run did not log fails the gate: serving a model
nobody measured is worse than not serving it.

MIN_ACCURACY_THRESHOLD is also the operator's floor (GATE_FLOOR_ENFORCED, on by default): a
notebook may raise its gate, not lower it. The floor is a bound on accuracy, so it applies to
accuracy wherever accuracy is measured:
- a gate on `accuracy` (direction max) below the floor is raised to it (`apply_floor`);
- a notebook gating on another metric keeps its gate (a regression model has no accuracy, and
  refusing other metrics would forbid regression notebooks), but a run that logs `accuracy`
  below the floor is still not served (`evaluate_gate(..., accuracy_floor=...)`): choosing
  `f1`, or `accuracy` with direction "min", does not get a classifier around the floor.
A run that gates on another metric and logs no accuracy is judged by its own gate alone.
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


def apply_floor(gate: GateSettings, floor: float) -> tuple[GateSettings, str | None]:
    """The gate a notebook gets under the operator's accuracy floor, and a note when it changed.

    Only a gate on accuracy, direction max, below the floor changes (it is raised to it); every
    other gate is kept, and the floor is checked on the run's accuracy by `evaluate_gate`.
    """
    if gate.metric != DEFAULT_GATE_METRIC or gate.direction != "max" or gate.threshold >= floor:
        return gate, None
    raised = GateSettings(gate.metric, float(floor), gate.direction)
    return raised, (
        f"GATE_THRESHOLD {gate.threshold:g} for {gate.metric} is below the operator's floor "
        f"(MIN_ACCURACY_THRESHOLD = {floor:g}); the gate is raised to {describe_gate(raised)}"
    )


def describe_floor(floor: float) -> str:
    """E.g. `accuracy >= 0.8 when logged`: the floor every run is also held to."""
    return f"{DEFAULT_GATE_METRIC} >= {floor:g} when logged"


def describe_gates(gate: GateSettings, floor: float | None) -> str:
    """The notebook's gate, plus the floor when it is a separate check (another metric)."""
    text = describe_gate(gate)
    if floor is not None and (gate.metric != DEFAULT_GATE_METRIC or gate.direction != "max"):
        text += f"; the operator's floor {describe_floor(floor)} also applies"
    return text


def evaluate_gate(
    gate: GateSettings, metrics: Mapping[str, Any], *, accuracy_floor: float | None = None
) -> GateResult:
    """Compare the run's gate metric with the gate's bound, then its accuracy with the floor.

    `accuracy_floor` (None: not enforced) fails a run that passed its own gate but logged an
    accuracy below the floor.
    """
    verdict = _evaluate_own_gate(gate, metrics)
    if not verdict.passed or accuracy_floor is None:
        return verdict
    accuracy = metrics.get(DEFAULT_GATE_METRIC)
    if accuracy is None:
        return verdict
    try:
        value = float(accuracy)
    except (TypeError, ValueError):
        value = math.nan
    if value >= accuracy_floor:  # NaN is below every floor
        return verdict
    return GateResult(
        False,
        f"{verdict.reason}, but the operator's floor {describe_floor(accuracy_floor)} failed: "
        f"{DEFAULT_GATE_METRIC} = {value:g} (MIN_ACCURACY_THRESHOLD)",
        verdict.value,
    )


def _evaluate_own_gate(gate: GateSettings, metrics: Mapping[str, Any]) -> GateResult:
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
