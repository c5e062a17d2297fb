"""Deploying a version below its gate by hand needs force and a reason (no services)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.deploy_confirmation import GateNotConfirmed, deployment_reason
from mlops_core.deploy_gate import ServedVersion, evaluate_gate
from mlops_core.model_registry import VersionInfo
from mlops_core.notebook_contract import GateSettings

GATE = GateSettings("accuracy", 0.8, "max")


def version(verdict: dict | None) -> VersionInfo:
    return VersionInfo("2", datetime.now(UTC), "run", "READY", verdict=verdict)


WORSE = evaluate_gate(
    GATE, {"accuracy": 0.9}, served=ServedVersion("1", {"accuracy": 0.933}), tolerance=0.01
).as_dict()
BELOW_THRESHOLD = evaluate_gate(GATE, {"accuracy": 0.61}).as_dict()
PASSED = evaluate_gate(GATE, {"accuracy": 0.95}).as_dict()


def test_without_force_the_refusal_names_the_failed_rule_and_both_numbers() -> None:
    with pytest.raises(GateNotConfirmed) as caught:
        deployment_reason("iris", version(WORSE), force=False, reason=None)
    message = str(caught.value)
    assert message.startswith(
        "version 2 of iris failed the comparison with the served version (GATE_TOLERANCE): "
        "accuracy 0.900 < served v1 0.933 - 0.01"
    )
    assert '{"version": "2", "force": true, "reason": "why"}' in message
    with pytest.raises(GateNotConfirmed, match=r"failed its gate: gate accuracy >= 0\.8 failed"):
        deployment_reason("iris", version(BELOW_THRESHOLD), force=False, reason="urgent")


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_force_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(GateNotConfirmed, match="force needs a reason"):
        deployment_reason("iris", version(WORSE), force=True, reason=reason)


def test_a_confirmed_deploy_records_the_verdict_and_the_reason() -> None:
    recorded = deployment_reason(
        "iris", version(WORSE), force=True, reason="  v1 mislabels\n  new customers "
    )
    assert recorded == (
        "below its gate (accuracy 0.900 < served v1 0.933 - 0.01: worse than the served "
        "version by more than GATE_TOLERANCE (gate accuracy >= 0.8 passed: accuracy = 0.9)), "
        "deployed anyway: v1 mislabels new customers"  # one line in the history
    )


def test_a_version_that_passed_or_was_never_judged_deploys_as_before() -> None:
    assert deployment_reason("iris", version(PASSED), force=False, reason=None) is None
    assert deployment_reason("iris", version(None), force=False, reason=None) is None
    assert deployment_reason("iris", version(PASSED), force=False, reason=" canary ") == "canary"
