"""Champion/challenger: a version passing its gate must not be worse than the served one.

Pure pieces, no services: the verdict (mlops_core/deploy_gate.py) and the config cell's
GATE_COMPARE / GATE_TOLERANCE (mlops_core/notebook_contract.py).
"""

from __future__ import annotations

import json
import math

import pytest

from mlops_core.deploy_gate import (
    RULE_FLOOR,
    RULE_GATE,
    RULE_SERVED,
    ServedVersion,
    describe_comparison,
    evaluate_gate,
)
from mlops_core.notebook_contract import (
    ContractViolation,
    GateComparison,
    GateSettings,
    check_notebook,
    read_notebook,
)
from mlops_core.run_parameters import validate_parameters
from tests.pipeline.conftest import build_notebook

ACCURACY = GateSettings("accuracy", 0.8, "max")
RMSE = GateSettings("rmse", 60.0, "min")
SERVED = ServedVersion("1", {"accuracy": 0.9333333333333333, "rmse": 50.0})


@pytest.mark.parametrize(
    ("gate", "metrics", "tolerance", "passed", "reason"),
    [
        # The push: 0.90 against a served 0.933 is refused, naming both numbers.
        (
            ACCURACY,
            {"accuracy": 0.9},
            0.01,
            False,
            "accuracy 0.900 < served v1 0.933 - 0.01: worse than the served version by more "
            "than GATE_TOLERANCE (gate accuracy >= 0.8 passed: accuracy = 0.9)",
        ),
        (
            ACCURACY,
            {"accuracy": 0.95},
            0.01,
            True,
            "gate accuracy >= 0.8 passed: accuracy = 0.95; "
            "accuracy 0.950 >= served v1 0.933 - 0.01",
        ),
        # Within the tolerance: a little worse still serves.
        (ACCURACY, {"accuracy": 0.93}, 0.01, True, "accuracy 0.930 >= served v1 0.933 - 0.01"),
        (ACCURACY, {"accuracy": 0.9}, 0.05, True, "accuracy 0.900 >= served v1 0.933 - 0.05"),
        # Lower is better: the bound is above the served value.
        (RMSE, {"rmse": 50.5}, 1.0, True, "rmse 50.500 <= served v1 50.000 + 1"),
        (RMSE, {"rmse": 52.0}, 1.0, False, "rmse 52.000 > served v1 50.000 + 1"),
    ],
)
def test_the_served_version_is_the_bar(
    gate: GateSettings, metrics: dict[str, float], tolerance: float, passed: bool, reason: str
) -> None:
    verdict = evaluate_gate(gate, metrics, served=SERVED, tolerance=tolerance)
    assert verdict.passed is passed
    assert reason in verdict.reason
    assert verdict.failed_rule == (None if passed else RULE_SERVED)
    assert (verdict.served_version, verdict.served_value) == ("1", SERVED.metrics[gate.metric])
    assert verdict.value == metrics[gate.metric] and verdict.tolerance == tolerance


def test_exactly_at_the_bound_passes_despite_float_rounding() -> None:
    loss = GateSettings("loss", 1.0, "min")
    served = ServedVersion("4", {"loss": 0.7})
    assert 0.8 > 0.7 + 0.1  # the float sum lands just below 0.8
    verdict = evaluate_gate(loss, {"loss": 0.8}, served=served, tolerance=0.1)
    assert verdict.passed, verdict.reason


def test_numbers_that_round_alike_are_shown_with_more_digits() -> None:
    served = ServedVersion("2", {"accuracy": 0.93349})
    verdict = evaluate_gate(ACCURACY, {"accuracy": 0.93301}, served=served, tolerance=0.0)
    assert not verdict.passed
    assert verdict.reason.startswith("accuracy 0.9330 < served v2 0.9335 - 0")


@pytest.mark.parametrize("served_metrics", [{}, {"accuracy": math.nan}, {"accuracy": "n/a"}])
def test_a_served_version_without_the_metric_is_not_compared(served_metrics: dict) -> None:
    served = ServedVersion("3", served_metrics)
    verdict = evaluate_gate(ACCURACY, {"accuracy": 0.85}, served=served, tolerance=0.01)
    assert verdict.passed
    assert verdict.reason.endswith("; served v3 logged no accuracy: not compared")
    assert verdict.served_version == "3" and verdict.served_value is None


def test_the_own_gate_and_the_floor_decide_first() -> None:
    low = evaluate_gate(ACCURACY, {"accuracy": 0.7}, served=SERVED, tolerance=0.01)
    assert (low.passed, low.failed_rule, low.served_version) == (False, RULE_GATE, None)
    floored = evaluate_gate(
        RMSE, {"rmse": 40.0, "accuracy": 0.5}, accuracy_floor=0.8, served=SERVED
    )
    assert (floored.passed, floored.failed_rule) == (False, RULE_FLOOR)
    alone = evaluate_gate(ACCURACY, {"accuracy": 0.85})  # nothing served: the gate alone
    assert alone.passed and alone.failed_rule is None and alone.served_version is None


def test_the_verdict_is_stored_as_json_both_numbers_included() -> None:
    verdict = evaluate_gate(ACCURACY, {"accuracy": 0.9}, served=SERVED, tolerance=0.01)
    stored = json.loads(verdict.to_json())
    assert stored["passed"] is False and stored["failed_rule"] == RULE_SERVED
    assert (stored["value"], stored["served_value"], stored["tolerance"]) == (
        0.9,
        SERVED.metrics["accuracy"],
        0.01,
    )
    assert (stored["metric"], stored["served_version"]) == ("accuracy", "1")
    nan = evaluate_gate(ACCURACY, {"accuracy": math.nan})
    assert json.loads(nan.to_json())["value"] is None  # JSON has no NaN


# --- the config cell ------------------------------------------------------------------------

BODY = [
    (("mlops:preprocessing",), "x = 1"),
    (("mlops:training",), "model = object()"),
    (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
]


def contract_of(config: str) -> GateComparison:
    nb = read_notebook(
        build_notebook([(("mlops:config",), f'MODEL_NAME = "m"\nVERSION = "1"\n{config}'), *BODY])
    )
    return check_notebook(nb, default_threshold=0.8).comparison


def test_the_config_cell_may_set_the_tolerance_or_turn_the_comparison_off() -> None:
    assert contract_of("") == GateComparison(True, None)  # None: GATE_TOLERANCE applies
    assert contract_of("GATE_TOLERANCE = 0.05") == GateComparison(True, 0.05)
    assert contract_of("GATE_TOLERANCE = 0") == GateComparison(True, 0.0)
    assert contract_of("GATE_COMPARE = False") == GateComparison(False, None)
    assert describe_comparison(ACCURACY, GateComparison(True, None), 0.01) == (
        "no worse than the served version's accuracy by more than 0.01"
    )
    assert "GATE_COMPARE = False" in describe_comparison(ACCURACY, GateComparison(False), 0.01)


@pytest.mark.parametrize(
    ("config", "violation"),
    [
        ('GATE_COMPARE = "no"', "GATE_COMPARE must be True or False, not 'no'"),
        ("GATE_TOLERANCE = -0.1", "GATE_TOLERANCE must be a finite number >= 0, not -0.1"),
        ('GATE_TOLERANCE = "1%"', "GATE_TOLERANCE must be a number, not '1%'"),
        ("GATE_TOLERANCE = float('inf')", "GATE_TOLERANCE must be a literal, not a function call"),
        ("GATE_COMPARE = not True", "GATE_COMPARE must be a literal, not an expression"),
    ],
)
def test_a_bad_comparison_setting_is_named(config: str, violation: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        contract_of(config)
    assert violation in caught.value.violations


@pytest.mark.parametrize("name", ["GATE_COMPARE", "GATE_TOLERANCE"])
def test_a_trigger_cannot_loosen_the_comparison(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        validate_parameters({name: False})
