"""The deploy gate and the worker's deploy phase against a real registry and model server."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlops_core.canary_registry import clear_canary, serving_state
from mlops_core.database import session_scope
from mlops_core.deploy_gate import default_gate, evaluate_gate
from mlops_core.log_events import LogPublisher
from mlops_core.model_registry import (
    TAG_GATE_VERDICT,
    get_version,
    served_version,
    set_served_version,
)
from mlops_core.notebook_contract import GateComparison, GateSettings, NotebookContract
from mlops_core.schema import Deployment, Pipeline
from mlops_core.settings import Settings
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from worker.phases import deploy
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped

ACCURACY = GateSettings("accuracy", 0.8, "max")
RMSE = GateSettings("rmse", 60.0, "min")


# --- the gate itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "metrics", "passed", "fragment"),
    [
        (ACCURACY, {"accuracy": 0.93}, True, "gate accuracy >= 0.8 passed: accuracy = 0.93"),
        (ACCURACY, {"accuracy": 0.8}, True, "passed"),
        (ACCURACY, {"accuracy": 0.61}, False, "gate accuracy >= 0.8 failed: accuracy = 0.61"),
        (RMSE, {"rmse": 53.2}, True, "gate rmse <= 60 passed: rmse = 53.2"),
        (RMSE, {"rmse": 71.0}, False, "gate rmse <= 60 failed: rmse = 71"),
        (RMSE, {"r2": 0.4}, False, "metric 'rmse' was not logged (logged: r2)"),
        (ACCURACY, {}, False, "metric 'accuracy' was not logged (logged: none)"),
        (ACCURACY, {"accuracy": math.nan}, False, "accuracy is NaN"),
    ],
)
def test_gate_verdicts(
    gate: GateSettings, metrics: dict[str, float], passed: bool, fragment: str
) -> None:
    result = evaluate_gate(gate, metrics)
    assert result.passed is passed
    assert fragment in result.reason


def test_default_gate_is_accuracy_at_min_accuracy_threshold() -> None:
    gate = default_gate(0.75)
    assert (gate.metric, gate.threshold, gate.direction) == ("accuracy", 0.75, "max")
    assert evaluate_gate(gate, {"accuracy": 0.76}).passed
    assert not evaluate_gate(gate, {"accuracy": 0.74}).passed


# --- the deploy phase --------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_versions(registry: MlflowClient, serving_alias: str) -> tuple[str, list[str]]:
    x, y = iris_like()
    name = unique("gated-iris")
    versions = [
        register_version(LogisticRegression(max_iter=300, C=c).fit(x, y), x, name)
        for c in (1.0, 0.5)
    ]
    set_served_version(registry, name, versions[0], serving_alias)
    return name, versions


@pytest.fixture(scope="module")
def server(
    classifier_versions: tuple[str, list[str]], start_server: Callable[..., ModelServer]
) -> ModelServer:
    name, versions = classifier_versions
    server = start_server("deploy-phase", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    server.wait_serving(name, versions[0])
    return server


@pytest.fixture
def make_ctx(
    database_url: str,
    redis_url: str,
    mlflow_uri: str,
    serving_alias: str,
    tmp_path: Path,
    registry: MlflowClient,
) -> Iterator[Callable[..., PhaseContext]]:
    """A PhaseContext for a pipeline row that has just registered `version`."""
    client = redis.Redis.from_url(redis_url)

    def make(
        name: str, version: str, metrics: dict[str, float], gate: GateSettings, **settings: object
    ) -> PhaseContext:
        pipeline_id = random.randint(1, 10**9)
        with session_scope(database_url) as session:
            session.add(
                Pipeline(
                    id=pipeline_id,
                    repo_url="file:///tmp/repo",
                    branch="main",
                    notebook_path="train.ipynb",
                    status="running",
                    model_name=name,
                    model_version=version,
                )
            )
        values: dict[str, object] = {
            "database_url": database_url,
            "redis_url": redis_url,
            "mlflow_tracking_uri": mlflow_uri,
            "serving_alias": serving_alias,
            "deploy_wait_seconds": 30,
            "model_heartbeat_interval_seconds": 1,
        }
        config = Settings(**{**values, **settings})  # type: ignore[arg-type]
        return PhaseContext(
            settings=config,
            pipeline_id=pipeline_id,
            attempt=1,
            redis=client,
            publisher=LogPublisher(client, pipeline_id),
            mlflow=registry,
            cancel_event=threading.Event(),
            deadline=time.monotonic() + 600,
            work_dir=tmp_path,
            phase="deploy",
            contract=NotebookContract(model_name=name, version="1.0", gate=gate),
            model_name=name,
            model_version=version,
            metrics=metrics,
        )

    yield make
    client.close()


def deployments(database_url: str, pipeline_id: int) -> list[tuple[str, str | None, str | None]]:
    with session_scope(database_url) as session:
        rows = session.query(Deployment).filter_by(pipeline_id=pipeline_id).order_by(Deployment.id)
        return [(r.action, r.version, r.previous_version) for r in rows]


def test_passing_gate_deploys_and_waits_for_a_model_server(
    server: ModelServer,
    classifier_versions: tuple[str, list[str]],
    make_ctx: Callable[..., PhaseContext],
    registry: MlflowClient,
    serving_alias: str,
    database_url: str,
) -> None:
    name, (v1, v2) = classifier_versions
    ctx = make_ctx(name, v2, {"accuracy": 0.95}, ACCURACY)
    deploy.run(ctx)
    # The phase returned only after a replica reported v2 loaded: it answers right away.
    assert server.served()[name] == v2
    assert served_version(registry, name, serving_alias) == v2
    assert deployments(database_url, ctx.pipeline_id) == [("auto", v2, v1)]
    deploy.run(ctx)  # the task delivered again: no second deployment
    assert deployments(database_url, ctx.pipeline_id) == [("auto", v2, v1)]
    with session_scope(database_url) as session:
        assert session.get(Pipeline, ctx.pipeline_id).deployed is True  # type: ignore[union-attr]
    log = [event.text for event in ctx.publisher.history()]
    assert any("gate accuracy >= 0.8 passed" in line for line in log)
    assert any(
        f"version {v2} is served (loaded by model server deploy-phase)" in line for line in log
    )
    set_served_version(registry, name, v1, serving_alias)


def test_failing_gate_registers_but_does_not_serve(
    server: ModelServer,
    classifier_versions: tuple[str, list[str]],
    make_ctx: Callable[..., PhaseContext],
    registry: MlflowClient,
    serving_alias: str,
    database_url: str,
) -> None:
    name, (v1, v2) = classifier_versions
    set_served_version(registry, name, v1, serving_alias)
    ctx = make_ctx(name, v2, {"accuracy": 0.42}, ACCURACY)
    with pytest.raises(PhaseSkipped, match=r"gate accuracy >= 0\.8 failed: accuracy = 0\.42"):
        deploy.run(ctx)
    assert served_version(registry, name, serving_alias) == v1
    assert deployments(database_url, ctx.pipeline_id) == []


def test_regression_gate_through_the_phase(
    registry: MlflowClient,
    make_ctx: Callable[..., PhaseContext],
    serving_alias: str,
    server: ModelServer,
) -> None:
    x, y = load_diabetes(return_X_y=True)
    name = unique("gated-diabetes")
    version = register_version(LinearRegression().fit(x, y), x, name, metrics={"rmse": 71.0})
    with pytest.raises(PhaseSkipped, match="gate rmse <= 60 failed: rmse = 71"):
        deploy.run(make_ctx(name, version, {"rmse": 71.0}, RMSE))
    assert served_version(registry, name, serving_alias) is None
    ctx = make_ctx(name, version, {"rmse": 53.0}, RMSE)
    deploy.run(ctx)
    assert server.served()[name] == version


def test_auto_deploy_off_skips(
    classifier_versions: tuple[str, list[str]], make_ctx: Callable[..., PhaseContext]
) -> None:
    name, (_, v2) = classifier_versions
    ctx = make_ctx(name, v2, {"accuracy": 0.99}, ACCURACY, auto_deploy_on_success=False)
    with pytest.raises(PhaseSkipped, match="AUTO_DEPLOY_ON_SUCCESS is off"):
        deploy.run(ctx)


def test_no_model_server_in_time_restores_the_previous_version(
    classifier_versions: tuple[str, list[str]],
    make_ctx: Callable[..., PhaseContext],
    registry: MlflowClient,
    database_url: str,
) -> None:
    name, (v1, v2) = classifier_versions
    lonely_alias = f"nobody{random.randint(0, 10**6)}"  # no replica follows this alias
    set_served_version(registry, name, v1, lonely_alias)
    ctx = make_ctx(
        name, v2, {"accuracy": 0.9}, ACCURACY, serving_alias=lonely_alias, deploy_wait_seconds=2
    )
    with pytest.raises(PhaseFailed, match=f"no model server reported {name} version {v2} loaded"):
        deploy.run(ctx)
    assert served_version(registry, name, lonely_alias) == v1
    assert deployments(database_url, ctx.pipeline_id) == [("auto", v2, v1), ("restore", v1, v2)]


def test_a_version_worse_than_the_served_one_is_registered_not_served(
    registry: MlflowClient,
    make_ctx: Callable[..., PhaseContext],
    serving_alias: str,
    database_url: str,
) -> None:
    """Champion/challenger: the verdict names both numbers on the phase, the pipeline row and
    the registered version; a tolerance or GATE_COMPARE = False in the config cell lets it by."""
    x, y = iris_like()
    name = unique("challenged-iris")
    model = LogisticRegression(max_iter=300).fit(x, y)
    served, worse = (
        register_version(model, x, name, metrics={"accuracy": accuracy})
        for accuracy in (0.9333333333333333, 0.9)
    )
    set_served_version(registry, name, served, serving_alias)

    ctx = make_ctx(name, worse, {"accuracy": 0.9}, ACCURACY)
    refused = f"accuracy 0.900 < served v{served} 0.933 - 0.01"
    with pytest.raises(PhaseSkipped, match=f"^{refused}: worse than the served version") as skip:
        deploy.run(ctx)
    assert str(skip.value).endswith(f"; {name} version {worse} is registered, not served")
    assert served_version(registry, name, serving_alias) == served
    assert deployments(database_url, ctx.pipeline_id) == []
    with session_scope(database_url) as session:
        verdict = session.get(Pipeline, ctx.pipeline_id).params["gate_verdict"]  # type: ignore[union-attr]
    assert (verdict["passed"], verdict["failed_rule"], verdict["served_version"]) == (
        False,
        "served",
        served,
    )
    assert (verdict["value"], verdict["served_value"], verdict["tolerance"]) == (
        0.9,
        0.9333333333333333,
        0.01,
    )
    assert get_version(registry, name, worse).verdict == verdict
    assert json.loads(registry.get_model_version(name, worse).tags[TAG_GATE_VERDICT]) == verdict

    # The same version with a wider tolerance, or no comparison, passes (AUTO_DEPLOY off keeps
    # it unserved here, and the verdict is still kept).
    for comparison, fragment in [
        (GateComparison(True, 0.05), f"accuracy 0.900 >= served v{served} 0.933 - 0.05"),
        (GateComparison(False), "not compared with the served version (GATE_COMPARE = False)"),
    ]:
        ctx = make_ctx(name, worse, {"accuracy": 0.9}, ACCURACY, auto_deploy_on_success=False)
        assert ctx.contract is not None
        ctx.contract = replace(ctx.contract, comparison=comparison)
        with pytest.raises(PhaseSkipped, match="AUTO_DEPLOY_ON_SUCCESS is off"):
            deploy.run(ctx)
        stored = get_version(registry, name, worse).verdict
        assert stored is not None and stored["passed"] is True and fragment in stored["reason"]


def test_a_shadow_strategy_starts_the_version_as_a_challenger(
    server: ModelServer,
    classifier_versions: tuple[str, list[str]],
    make_ctx: Callable[..., PhaseContext],
    registry: MlflowClient,
    serving_alias: str,
    database_url: str,
) -> None:
    name, (v1, v2) = classifier_versions
    set_served_version(registry, name, v1, serving_alias)
    ctx = make_ctx(name, v2, {"accuracy": 0.95}, ACCURACY, deploy_strategy="shadow")
    deploy.run(ctx)
    # The phase returned once a replica had the challenger loaded; the champion still serves.
    assert server.models()[name]["challenger"]["version"] == v2
    assert served_version(registry, name, serving_alias) == v1
    state = serving_state(registry, name, serving_alias, "challenger")
    assert state.canary is not None
    assert (state.canary.version, state.canary.mode, state.canary.weight) == (v2, "shadow", 10)
    deploy.run(ctx)  # delivered again: the canary is not started twice
    assert deployments(database_url, ctx.pipeline_id) == [("canary", v2, v1)]
    log = [event.text for event in ctx.publisher.history()]
    assert log[-1].startswith(
        f"canary started: {name} version {v2} shadows 10% of requests beside version {v1}"
    )
    with session_scope(database_url) as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        assert pipeline is not None and pipeline.deployed is False
        assert pipeline.params["canary"] == {"champion": v1, "mode": "shadow", "weight": 10.0}
    clear_canary(registry, name, "challenger")


def test_a_challenger_no_model_server_loads_is_aborted(
    classifier_versions: tuple[str, list[str]],
    make_ctx: Callable[..., PhaseContext],
    registry: MlflowClient,
    serving_alias: str,
    database_url: str,
) -> None:
    name, (v1, v2) = classifier_versions
    set_served_version(registry, name, v1, serving_alias)
    lonely = f"nobody{random.randint(0, 10**6)}"  # no replica follows this challenger alias
    ctx = make_ctx(
        name,
        v2,
        {"accuracy": 0.95},
        ACCURACY,
        deploy_strategy="canary",
        challenger_alias=lonely,
        deploy_wait_seconds=2,
    )
    with pytest.raises(PhaseFailed, match=f"the canary was aborted, {name} stays on version {v1}"):
        deploy.run(ctx)
    assert serving_state(registry, name, serving_alias, lonely).canary is None
    assert deployments(database_url, ctx.pipeline_id) == [("canary", v2, v1), ("abort", v2, v1)]
