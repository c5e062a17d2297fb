"""MIN_ACCURACY_THRESHOLD is a floor: a notebook may raise its gate, not lower it.

The floor is on accuracy wherever accuracy is measured: a lower accuracy gate is raised to it,
and a gate on another metric still fails a run whose logged accuracy is below it. Pure
functions first, then the validate phase that applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_core.deploy_gate import apply_floor, describe_gates, evaluate_gate
from mlops_core.notebook_contract import GateSettings
from mlops_core.settings import Settings
from tests.pipeline.conftest import build_notebook, create_pipeline, pipeline_state
from tests.support.phases import log_lines
from worker.phases import validate
from worker.phases.context import PhaseContext

FLOOR = 0.8


@pytest.mark.parametrize(
    ("declared", "effective", "noted"),
    [
        (GateSettings("accuracy", 0.5, "max"), GateSettings("accuracy", 0.8, "max"), True),
        (GateSettings("accuracy", 0.9, "max"), GateSettings("accuracy", 0.9, "max"), False),
        (GateSettings("accuracy", 0.8, "max"), GateSettings("accuracy", 0.8, "max"), False),
        # Other metrics keep their gate: the floor is checked on the run's accuracy instead.
        (GateSettings("rmse", 70.0, "min"), GateSettings("rmse", 70.0, "min"), False),
        (GateSettings("f1", 0.1, "max"), GateSettings("f1", 0.1, "max"), False),
        (GateSettings("accuracy", 0.3, "min"), GateSettings("accuracy", 0.3, "min"), False),
    ],
)
def test_a_notebook_accuracy_gate_below_the_floor_is_raised_to_it(
    declared: GateSettings, effective: GateSettings, noted: bool
) -> None:
    gate, note = apply_floor(declared, FLOOR)
    assert gate == effective
    assert (note is not None) == noted
    if note:
        assert "GATE_THRESHOLD 0.5 for accuracy is below the operator's floor" in note
        assert "MIN_ACCURACY_THRESHOLD = 0.8" in note and "accuracy >= 0.8" in note


@pytest.mark.parametrize(
    ("gate", "metrics", "passed", "fragment"),
    [
        # Another metric's gate passes, but the logged accuracy is below the floor.
        (GateSettings("f1", 0.5, "max"), {"f1": 0.9, "accuracy": 0.6}, False, "accuracy = 0.6"),
        # Direction "min" on accuracy does not turn the floor upside down.
        (GateSettings("accuracy", 0.9, "min"), {"accuracy": 0.5}, False, "floor accuracy >= 0.8"),
        (GateSettings("f1", 0.5, "max"), {"f1": 0.9, "accuracy": math.nan}, False, "nan"),
        # No accuracy logged (a regressor): its own gate alone decides.
        (GateSettings("rmse", 60.0, "min"), {"rmse": 55.0}, True, "gate rmse <= 60 passed"),
        (GateSettings("rmse", 60.0, "min"), {"rmse": 65.0}, False, "gate rmse <= 60 failed"),
        (GateSettings("f1", 0.5, "max"), {"f1": 0.9, "accuracy": 0.85}, True, "passed"),
        (GateSettings("accuracy", 0.8, "max"), {"accuracy": 0.81}, True, "passed"),
    ],
)
def test_the_floor_holds_wherever_accuracy_is_logged(
    gate: GateSettings, metrics: dict[str, float], passed: bool, fragment: str
) -> None:
    verdict = evaluate_gate(gate, metrics, accuracy_floor=FLOOR)
    assert verdict.passed is passed
    assert fragment in verdict.reason


def test_without_the_floor_only_the_notebooks_gate_decides() -> None:
    gate = GateSettings("f1", 0.5, "max")
    assert evaluate_gate(gate, {"f1": 0.9, "accuracy": 0.1}, accuracy_floor=None).passed
    assert evaluate_gate(gate, {"f1": 0.9, "accuracy": 0.1}).passed


def test_the_floor_is_shown_beside_a_gate_on_another_metric() -> None:
    assert describe_gates(GateSettings("accuracy", 0.9, "max"), FLOOR) == "accuracy >= 0.9"
    assert describe_gates(GateSettings("rmse", 60.0, "min"), FLOOR) == (
        "rmse <= 60; the operator's floor accuracy >= 0.8 when logged also applies"
    )
    assert describe_gates(GateSettings("rmse", 60.0, "min"), None) == "rmse <= 60"


def test_gate_floor_enforced_is_on_by_default() -> None:
    assert Settings(_env_file=None).accuracy_floor == 0.8  # type: ignore[call-arg]
    off = Settings(_env_file=None, gate_floor_enforced=False)  # type: ignore[call-arg]
    assert off.accuracy_floor is None


@pytest.mark.parametrize(("enforced", "threshold"), [(True, 0.8), (False, 0.5)])
def test_validate_raises_a_lower_accuracy_gate_and_says_so(
    enforced: bool,
    threshold: float,
    database_url: str,
    make_phase_context: Callable[..., PhaseContext],
    tmp_path: Path,
) -> None:
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(
        build_notebook(
            [
                (("mlops:config",), 'MODEL_NAME = "floored"\nVERSION = "1"\nGATE_THRESHOLD = 0.5'),
                (("mlops:preprocessing",), "X = 1"),
                (("mlops:training",), "model = X"),
                (("mlops:export",), "pass"),
            ]
        )
    )
    url = f"https://github.com/o/floor-{enforced}"
    pipeline_id = create_pipeline(database_url, repo_url=url)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        min_accuracy_threshold=FLOOR,
        gate_floor_enforced=enforced,
    )
    ctx = make_phase_context(
        settings,
        phase="validate",
        pipeline_id=pipeline_id,
        repo_url=url,
        notebook_path="train.ipynb",
        notebook_file=notebook,
    )
    validate.run(ctx)
    assert ctx.gate == GateSettings("accuracy", threshold, "max")
    params = pipeline_state(database_url, pipeline_id)["params"]
    assert params["gate"] == {"metric": "accuracy", "threshold": threshold, "direction": "max"}
    raised = [line for line in log_lines(ctx) if "below the operator's floor" in line]
    assert bool(raised) is enforced
