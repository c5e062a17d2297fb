"""Deploying a version below its gate by hand: only with an explicit confirmation and a reason.

The deploy phase keeps its gate verdict on each registered version (mlops_core/deploy_gate.py,
tag TAG_GATE_VERDICT). A person may still serve a version that failed it (the served one broke,
the metric is misleading), but not by a slip: the request must say `force` and give a reason,
and the deployment history keeps that reason beside the verdict, so whoever looks at the history
later sees that the gate was overruled, why, and by how much. A version the phase never judged
(registered elsewhere, or before verdicts were kept) deploys as before.
"""

from __future__ import annotations

from typing import Any, Final

from mlops_core.deploy_gate import RULE_FLOOR, RULE_GATE, RULE_SERVED
from mlops_core.model_registry import VersionInfo

# The longest reason a deploy request may give (the API refuses a longer one).
MAX_REASON_LENGTH: Final = 500
RULE_NAMES: Final = {
    RULE_GATE: "its gate",
    RULE_FLOOR: "the operator's floor (MIN_ACCURACY_THRESHOLD)",
    RULE_SERVED: "the comparison with the served version (GATE_TOLERANCE)",
}


class GateNotConfirmed(Exception):
    """The version is below its gate and the request did not confirm serving it anyway."""


def below_gate(version: VersionInfo) -> dict[str, Any] | None:
    """The stored verdict when the version failed its gate, else None."""
    verdict = version.verdict
    return verdict if verdict is not None and not verdict["passed"] else None


def given_reason(reason: str | None) -> str | None:
    """A reason as the history keeps it: on one line, None when blank."""
    return " ".join((reason or "").split()) or None


def deployment_reason(
    name: str, version: VersionInfo, *, force: bool, reason: str | None
) -> str | None:
    """What the deployment history records for a manual deploy of `version`.

    A version below its gate needs `force` and a reason (GateNotConfirmed names the failed rule
    and its numbers otherwise); the record then carries the verdict and the reason. For any
    other version the reason, if one was given, is recorded as it is.
    """
    given = given_reason(reason)
    verdict = below_gate(version)
    if verdict is None:
        return given
    rule = RULE_NAMES.get(str(verdict.get("failed_rule")), "its gate")
    failed = f"version {version.version} of {name} failed {rule}: {verdict.get('reason')}"
    if not force:
        body = f'{{"version": "{version.version}", "force": true, "reason": "why"}}'
        raise GateNotConfirmed(
            f"{failed}. To serve it anyway, send {body}: the reason is kept in the deployment "
            "history"
        )
    if given is None:
        raise GateNotConfirmed(
            f"{failed}. force needs a reason (it is kept in the deployment history)"
        )
    return f"below its gate ({verdict.get('reason')}), deployed anyway: {given}"
