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

Champion/challenger: a run that passed its gate (and the floor) must also not be worse than the
version served now on the gate's metric by more than a tolerance (GATE_TOLERANCE; a config cell
may set its own, or turn the comparison off with `GATE_COMPARE = False`). A fixed threshold alone
let a push scoring 0.90 replace a served 0.933. The served version's metrics are passed in, so
the verdict stays a pure function; a served version that logged no such metric cannot be
compared with, and the run is judged by its gate alone (the verdict says so).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from mlops_core.notebook_contract import DEFAULT_GATE_METRIC, GateComparison, GateSettings

# Which rule refused a version (`GateResult.failed_rule`).
RULE_GATE: Final = "gate"  # the notebook's own gate (metric, threshold, direction)
RULE_FLOOR: Final = "floor"  # the operator's accuracy floor (MIN_ACCURACY_THRESHOLD)
RULE_SERVED: Final = "served"  # worse than the served version by more than the tolerance
# A stored verdict's sentence is cut to this length (it is kept in a registry tag).
MAX_STORED_REASON: Final = 1000


@dataclass(frozen=True)
class ServedVersion:
    """The version served now and the metrics its run logged: what a new version is held to."""

    version: str
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class GateResult:
    """The decision, the value it was made on, and a sentence a person can read.

    `failed_rule` names the rule that refused the version (RULE_*; None when it passed); the
    comparison's numbers (`served_version`, `served_value`, `tolerance`) are set whenever the
    served version was compared with, so pages can show both numbers without parsing `reason`.
    """

    passed: bool
    reason: str
    value: float | None = None
    failed_rule: str | None = None
    metric: str | None = None
    served_version: str | None = None
    served_value: float | None = None
    tolerance: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored with the pipeline and on the registered version."""
        data = asdict(self)
        data["reason"] = self.reason[:MAX_STORED_REASON]
        for key in ("value", "served_value"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None  # JSON has no NaN
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


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


def describe_comparison(
    gate: GateSettings, comparison: GateComparison, default_tolerance: float
) -> str:
    """E.g. `no worse than the served version's accuracy by more than 0.01`."""
    if not comparison.enabled:
        return "not compared with the served version (GATE_COMPARE = False)"
    tolerance = default_tolerance if comparison.tolerance is None else comparison.tolerance
    return f"no worse than the served version's {gate.metric} by more than {tolerance:g}"


def evaluate_gate(
    gate: GateSettings,
    metrics: Mapping[str, Any],
    *,
    accuracy_floor: float | None = None,
    served: ServedVersion | None = None,
    tolerance: float = 0.0,
) -> GateResult:
    """Compare the run's gate metric with the gate's bound, its accuracy with the floor, then
    its gate metric with the served version's.

    `accuracy_floor` (None: not enforced) fails a run that passed its own gate but logged an
    accuracy below the floor. `served` (None: no comparison, e.g. nothing is served or the
    comparison is off) fails a run worse than it by more than `tolerance` on the gate metric.
    """
    verdict = _evaluate_own_gate(gate, metrics)
    if verdict.passed:
        verdict = _check_floor(verdict, metrics, accuracy_floor)
    if not verdict.passed or served is None:
        return verdict
    return _compare_with_served(gate, verdict, served, tolerance)


def _check_floor(
    verdict: GateResult, metrics: Mapping[str, Any], accuracy_floor: float | None
) -> GateResult:
    """Fail a run whose logged accuracy is below the operator's floor (when enforced)."""
    if accuracy_floor is None:
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
    return replace(
        verdict,
        passed=False,
        failed_rule=RULE_FLOOR,
        reason=f"{verdict.reason}, but the operator's floor {describe_floor(accuracy_floor)} "
        f"failed: {DEFAULT_GATE_METRIC} = {value:g} (MIN_ACCURACY_THRESHOLD)",
    )


def _compare_with_served(
    gate: GateSettings, verdict: GateResult, served: ServedVersion, tolerance: float
) -> GateResult:
    """The champion/challenger rule: no worse than the served version beyond `tolerance`."""
    assert verdict.value is not None  # a passed gate was decided on a number
    compared = replace(verdict, served_version=served.version, tolerance=tolerance)
    served_value = _as_number(served.metrics.get(gate.metric))
    if served_value is None:
        return replace(
            compared,
            reason=f"{verdict.reason}; served v{served.version} logged no {gate.metric}: "
            "not compared",
        )
    compared = replace(compared, served_value=served_value)
    higher_is_better = gate.direction == "max"
    bound = served_value - tolerance if higher_is_better else served_value + tolerance
    close = math.isclose(verdict.value, bound, rel_tol=1e-9, abs_tol=1e-12)  # 0.933 - 0.01
    passed = close or (verdict.value >= bound if higher_is_better else verdict.value <= bound)
    ok, bad, sign = (">=", "<", "-") if higher_is_better else ("<=", ">", "+")
    value_text, served_text = _two_numbers(verdict.value, served_value)
    rule = (
        f"{gate.metric} {value_text} {ok if passed else bad} served v{served.version} "
        f"{served_text} {sign} {tolerance:g}"
    )
    if passed:
        return replace(compared, reason=f"{verdict.reason}; {rule}")
    return replace(
        compared,
        passed=False,
        failed_rule=RULE_SERVED,
        reason=f"{rule}: worse than the served version by more than GATE_TOLERANCE "
        f"({verdict.reason})",
    )


def _as_number(raw: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or NaN metric."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _two_numbers(a: float, b: float) -> tuple[str, str]:
    """Both numbers with three decimals (as "0.900 < 0.933"), more when that hides a difference."""
    for digits in (3, 4, 5, 6, 8, 10):
        pair = (f"{a:.{digits}f}", f"{b:.{digits}f}")
        if pair[0] != pair[1] or a == b:
            return pair
    return f"{a!r}", f"{b!r}"


def _evaluate_own_gate(gate: GateSettings, metrics: Mapping[str, Any]) -> GateResult:
    """Compare the run's gate metric with the gate's bound."""
    rule = describe_gate(gate)
    raw = metrics.get(gate.metric)
    if raw is None:
        logged = ", ".join(sorted(metrics)) or "none"
        return GateResult(
            False,
            f"gate {rule} failed: metric {gate.metric!r} was not logged (logged: {logged})",
            failed_rule=RULE_GATE,
            metric=gate.metric,
        )
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return GateResult(
            False,
            f"gate {rule} failed: {gate.metric} = {raw!r} is not a number",
            failed_rule=RULE_GATE,
            metric=gate.metric,
        )
    if math.isnan(value):
        return GateResult(
            False,
            f"gate {rule} failed: {gate.metric} is NaN",
            value,
            failed_rule=RULE_GATE,
            metric=gate.metric,
        )
    passed = gate.passes(value)
    verdict = "passed" if passed else "failed"
    return GateResult(
        passed,
        f"gate {rule} {verdict}: {gate.metric} = {value:g}",
        value,
        failed_rule=None if passed else RULE_GATE,
        metric=gate.metric,
    )
