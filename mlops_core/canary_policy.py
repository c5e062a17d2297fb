"""The promotion policy: promote a challenger, abort it, or wait, from live evidence alone.

Pure: the backend gathers per-version figures from the prediction log (requests, errors,
latency, live quality from feedback, drift) since the canary started and asks `decide`. The
decision carries every number it used, so the deployment history can say why.

The rules, in order:

1. Fewer than CANARY_MIN_REQUESTS requests reached the challenger: wait, unless
   CANARY_MAX_SECONDS passed (abort: too little evidence in the time allowed).
2. Any figure clearly worse than the champion's, beyond its tolerance: abort.
   - error rate: challenger ≤ champion + CANARY_ERROR_RATE_TOLERANCE (absolute);
   - p95 latency: challenger ≤ champion * (1 + CANARY_LATENCY_TOLERANCE) +
     CANARY_LATENCY_SLACK_MS (the slack keeps a 2 ms model from failing over 3 ms);
   - live quality, when both versions have CANARY_MIN_FEEDBACK labelled rows: accuracy
     ≥ champion * (1 - CANARY_QUALITY_TOLERANCE), mae/rmse ≤ champion * (1 + tolerance);
   - drift: the challenger's share of drifted features ≤ champion's + CANARY_DRIFT_TOLERANCE.
   A figure one side lacks (no latency yet, no feedback, too few rows for drift) is not held
   against the challenger: it is shown as unknown.
3. CANARY_MIN_SECONDS not yet passed: wait (a burst of good minutes is not a good day).
4. Otherwise: promote.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

# Live-quality metrics where lower is better (backend/live_quality.py computes these names).
LOWER_IS_BETTER = frozenset({"mae", "rmse"})

Outcome = Literal["ok", "worse", "unknown"]


class Verdict(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    WAIT = "wait"


@dataclass(frozen=True)
class CanaryPolicy:
    """The thresholds (settings CANARY_*)."""

    min_requests: int = 100
    min_seconds: float = 300.0
    max_seconds: float = 3600.0
    error_rate_tolerance: float = 0.01
    latency_tolerance: float = 0.5
    latency_slack_ms: float = 20.0
    quality_tolerance: float = 0.05
    min_feedback: int = 30
    drift_tolerance: float = 0.25

    @classmethod
    def from_settings(cls, settings: Any) -> CanaryPolicy:
        return cls(
            min_requests=settings.canary_min_requests,
            min_seconds=settings.canary_min_seconds,
            max_seconds=settings.canary_max_seconds,
            error_rate_tolerance=settings.canary_error_rate_tolerance,
            latency_tolerance=settings.canary_latency_tolerance,
            latency_slack_ms=settings.canary_latency_slack_ms,
            quality_tolerance=settings.canary_quality_tolerance,
            min_feedback=settings.canary_min_feedback,
            drift_tolerance=settings.canary_drift_tolerance,
        )


@dataclass(frozen=True)
class VersionFigures:
    """One version's live figures since the canary started."""

    version: str
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    quality_metric: str | None = None
    quality: float | None = None
    quality_rows: int = 0
    drift_share: float | None = None  # share of features drifted; None: too few rows to tell

    @property
    def error_rate(self) -> float:
        attempts = self.requests + self.errors
        return self.errors / attempts if attempts else 0.0


@dataclass(frozen=True)
class Evidence:
    """Both versions' figures, how long the canary has run, and (shadow) how often they agree."""

    champion: VersionFigures
    challenger: VersionFigures
    elapsed_seconds: float
    agreement: float | None = None
    compared: int = 0


@dataclass(frozen=True)
class Check:
    """One comparison: both values, the bound the challenger had to meet, and the outcome."""

    name: str
    champion: float | None
    challenger: float | None
    bound: float | None
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    checks: list[Check] = field(default_factory=list)

    @property
    def worse(self) -> list[Check]:
        return [check for check in self.checks if check.outcome == "worse"]


def decide(evidence: Evidence, policy: CanaryPolicy) -> Decision:
    """Promote, abort or wait (see the module's rules); the reason names the numbers."""
    checks = compare(evidence, policy)
    challenger = evidence.challenger
    elapsed = evidence.elapsed_seconds
    if challenger.requests < policy.min_requests:
        seen = (
            f"{challenger.requests} of {policy.min_requests} requests reached v{challenger.version}"
        )
        if elapsed >= policy.max_seconds:
            return Decision(
                Verdict.ABORT,
                f"only {seen} in {elapsed:.0f}s (CANARY_MAX_SECONDS {policy.max_seconds:g})",
                checks,
            )
        return Decision(Verdict.WAIT, f"{seen} (CANARY_MIN_REQUESTS)", checks)
    worse = [check for check in checks if check.outcome == "worse"]
    if worse:
        return Decision(Verdict.ABORT, "; ".join(check.detail for check in worse), checks)
    if elapsed < policy.min_seconds:
        return Decision(
            Verdict.WAIT,
            f"no worse so far; {elapsed:.0f}s of CANARY_MIN_SECONDS {policy.min_seconds:g}",
            checks,
        )
    known = [check.detail for check in checks if check.outcome == "ok"]
    return Decision(
        Verdict.PROMOTE,
        f"v{challenger.version} no worse than v{evidence.champion.version} after "
        f"{challenger.requests} requests and {elapsed:.0f}s: " + "; ".join(known),
        checks,
    )


def compare(evidence: Evidence, policy: CanaryPolicy) -> list[Check]:
    """Every figure of the challenger against the champion's, within its tolerance."""
    a, b = evidence.champion, evidence.challenger
    return [
        _error_rate(a, b, policy),
        _latency(a, b, policy),
        _quality(a, b, policy),
        _drift(a, b, policy),
    ]


def _error_rate(a: VersionFigures, b: VersionFigures, policy: CanaryPolicy) -> Check:
    bound = a.error_rate + policy.error_rate_tolerance
    ok = b.error_rate <= bound + 1e-12
    sign = "<=" if ok else ">"
    return Check(
        "error_rate",
        a.error_rate,
        b.error_rate,
        bound,
        "ok" if ok else "worse",
        f"error rate {b.error_rate:.2%} {sign} champion {a.error_rate:.2%} + "
        f"{policy.error_rate_tolerance:g}",
    )


def _latency(a: VersionFigures, b: VersionFigures, policy: CanaryPolicy) -> Check:
    if a.p95_ms is None or b.p95_ms is None:
        return Check("p95_latency", a.p95_ms, b.p95_ms, None, "unknown", "p95 latency: no data")
    bound = a.p95_ms * (1 + policy.latency_tolerance) + policy.latency_slack_ms
    ok = b.p95_ms <= bound
    return Check(
        "p95_latency",
        a.p95_ms,
        b.p95_ms,
        bound,
        "ok" if ok else "worse",
        f"p95 {b.p95_ms:.1f} ms {'<=' if ok else '>'} {bound:.1f} ms (champion {a.p95_ms:.1f} ms"
        f" x {1 + policy.latency_tolerance:g} + {policy.latency_slack_ms:g})",
    )


def _quality(a: VersionFigures, b: VersionFigures, policy: CanaryPolicy) -> Check:
    metric = a.quality_metric or b.quality_metric
    if (
        a.quality is None
        or b.quality is None
        or a.quality_metric != b.quality_metric
        or min(a.quality_rows, b.quality_rows) < policy.min_feedback
    ):
        rows = f"{a.quality_rows} and {b.quality_rows} labelled rows"
        return Check(
            "live_quality",
            a.quality,
            b.quality,
            None,
            "unknown",
            f"live quality: {rows} (CANARY_MIN_FEEDBACK {policy.min_feedback} each)",
        )
    lower = metric in LOWER_IS_BETTER
    tolerance = policy.quality_tolerance
    bound = a.quality * (1 + tolerance) if lower else a.quality * (1 - tolerance)
    ok = b.quality <= bound + 1e-12 if lower else b.quality >= bound - 1e-12
    sign = ("<=" if ok else ">") if lower else (">=" if ok else "<")
    return Check(
        "live_quality",
        a.quality,
        b.quality,
        bound,
        "ok" if ok else "worse",
        f"live {metric} {b.quality:.3f} {sign} {bound:.3f} (champion {a.quality:.3f} "
        f"{'+' if lower else '-'} {tolerance:.0%}; {b.quality_rows} and {a.quality_rows} labels)",
    )


def _drift(a: VersionFigures, b: VersionFigures, policy: CanaryPolicy) -> Check:
    if b.drift_share is None:
        return Check("drift", a.drift_share, None, None, "unknown", "drift: too few rows yet")
    base = a.drift_share or 0.0
    bound = base + policy.drift_tolerance
    ok = b.drift_share <= bound + 1e-12
    return Check(
        "drift",
        a.drift_share,
        b.drift_share,
        bound,
        "ok" if ok else "worse",
        f"drifted features {b.drift_share:.0%} {'<=' if ok else '>'} champion {base:.0%} + "
        f"{policy.drift_tolerance:.0%}",
    )


def evidence_record(decision: Decision, evidence: Evidence, policy: CanaryPolicy) -> dict[str, Any]:
    """The decision with every number it used, JSON-ready (kept in the deployment history)."""
    return _finite(
        {
            "verdict": decision.verdict.value,
            "reason": decision.reason,
            "elapsed_seconds": round(evidence.elapsed_seconds, 1),
            "champion": asdict(evidence.champion),
            "challenger": asdict(evidence.challenger),
            "agreement": evidence.agreement,
            "compared": evidence.compared,
            "checks": [asdict(check) for check in decision.checks],
            "policy": asdict(policy),
        }
    )


def _finite(value: Any) -> Any:
    """NaN and infinities as None: the record goes into a JSON column."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
