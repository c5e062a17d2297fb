"""A model server of several processes on one port (MODEL_SERVER_WORKERS): all of them follow
the registry, a deploy counts as served only once every one has swapped, and /metrics counts
what all of them did, whichever answers the scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry, multiprocess

from mlops_core.model_events import (
    MODEL_LOADED_CHANNEL,
    DeployWaitError,
    ReplicaReport,
    merged_versions,
    publish_report,
    replica_versions,
    replicas_key,
    wait_until_loaded,
)
from mlops_core.model_registry import set_served_version
from mlops_core.prediction_log import PREDICTION_LOG_STREAM, REQUEST_ID_HEADER, from_stream
from model_server.metrics import forget_dead_processes
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.serving.test_metrics import scrape, value
from tests.serving.test_replicas import constant_model
from tests.support.processes import wait_for

WORKERS = 2
REQUESTS_PER_STEP = 48


def report(replica: str, version: str | None, *, server: str = "s", processes: int = 2):
    return ReplicaReport(
        replica=replica,
        server=server,
        processes=processes,
        alias="a",
        model="m",
        version=version,
        status="loaded",
    )


def test_a_server_counts_once_all_its_processes_report_one_version() -> None:
    # Mid-swap: each process by itself; once both agree: the server as one entry.
    assert merged_versions([report("s/1", "2"), report("s/2", "1")]) == {"s/1": "2", "s/2": "1"}
    assert merged_versions([report("s/1", "2")]) == {"s/1": "2"}  # the other not reported yet
    assert merged_versions([report("s/1", "2"), report("s/2", "2")]) == {"s": "2"}
    # A server of one process (and reports from before processes were counted) as before.
    single = ReplicaReport(replica="r", alias="a", model="m", version="3", status="loaded")
    assert merged_versions([single, report("s/1", "2"), report("s/2", "2")]) == {
        "r": "3",
        "s": "2",
    }


def test_deploy_wait_ends_only_when_every_process_of_a_server_has_the_version(
    redis_client: redis.Redis,
) -> None:
    alias, model = unique("alias"), unique("model")

    def loaded(replica: str, version: str) -> None:
        publish_report(
            redis_client,
            ReplicaReport(
                replica=replica,
                server="srv",
                processes=2,
                alias=alias,
                model=model,
                version=version,
                status="loaded",
            ),
            30,
        )

    loaded("srv/1", "1")
    loaded("srv/2", "1")
    loaded("srv/1", "2")  # one process swapped, the other still answers with version 1
    partly = f"{model} version 2 .*only partly: srv in 1 of 2 processes"
    with pytest.raises(DeployWaitError, match=partly):
        wait_until_loaded(
            redis_client, alias, model, "2", timeout_seconds=1.5, stale_after_seconds=30
        )
    subscription = redis_client.pubsub(ignore_subscribe_messages=True)
    subscription.subscribe(MODEL_LOADED_CHANNEL)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            wait_until_loaded,
            redis_client,
            alias,
            model,
            "2",
            timeout_seconds=20,
            stale_after_seconds=30,
            subscription=subscription,
        )
        time.sleep(0.3)
        assert not waiting.done()
        loaded("srv/2", "2")
        assert waiting.result(timeout=10) == "srv"
    subscription.close()
    assert replica_versions(redis_client, alias, model, 30) == {"srv": "2"}
    redis_client.delete(replicas_key(alias, model))


def test_a_dead_process_no_longer_says_what_it_served(tmp_path: Path) -> None:
    """A process that died (uvicorn starts another) leaves its live gauge; the next one drops
    it, and keeps what the dead one counted."""
    child = (
        "from model_server.metrics import record_prediction, record_served\n"
        "record_served('m', '1', None)\n"
        "record_prediction('m', '1', 0.01)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", child], env=env, check=True)

    def samples() -> dict[str, float]:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        return {
            sample.name: sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.labels.get("model") == "m" and not sample.name.endswith("_bucket")
        }

    assert samples()["ml_model_loaded"] == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        forget_dead_processes()
    after = samples()
    assert "ml_model_loaded" not in after
    assert after["ml_predictions_total"] == 1


def predict_many(server: ModelServer, name: str, count: int) -> list[httpx.Response]:
    """`count` predictions, 8 at a time, each on a connection of its own (so the kernel hands
    them to either process)."""

    def one(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/predict/{name}", json={"data": [[1, 2, 3, 4]]}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def logged_replicas(redis_client: redis.Redis, request_ids: set[str]) -> dict[str, str]:
    """Request id → the process that logged it, from the prediction log stream."""
    found: dict[str, str] = {}
    for _, fields in redis_client.xrange(PREDICTION_LOG_STREAM):
        record = from_stream(fields)
        if record.request_id in request_ids:
            found[record.request_id] = f"{record.replica}@{record.version}"
    return found


def test_processes_converge_on_deploy_and_rollback_and_metrics_count_all_of_them(
    registry: MlflowClient,
    start_server: Callable[..., ModelServer],
    redis_client: redis.Redis,
    serving_alias: str,
    move_alias: Callable[[str, str], None],
) -> None:
    x, _ = iris_like()
    name = unique("multiprocess")
    for value_ in (1.0, 2.0):
        register_version(constant_model(value_), x, name)
    set_served_version(registry, name, "1", serving_alias)
    # A long reconcile interval: only the announcements can make the processes act quickly.
    server = start_server(
        "multi", MODEL_SERVER_WORKERS=str(WORKERS), MODEL_RECONCILE_INTERVAL_SECONDS="600"
    )
    # Ready (start_server waits for /ready) means every process is: any may take a connection.
    first = predict_many(server, name, REQUESTS_PER_STEP)
    assert {(a.status_code, a.json()["model_version"]) for a in first} == {(200, "1")}
    # Both processes report version 1: the server shows as one.
    assert replica_versions(redis_client, serving_alias, name, 3) == {"multi": "1"}

    sent = len(first)
    seen: set[str] = set()
    for version in ("2", "1"):  # deploy, then roll back
        subscription = redis_client.pubsub(ignore_subscribe_messages=True)
        subscription.subscribe(MODEL_LOADED_CHANNEL)
        move_alias(name, version)
        served_by = wait_until_loaded(
            redis_client,
            serving_alias,
            name,
            version,
            timeout_seconds=60,
            stale_after_seconds=3,
            subscription=subscription,
        )
        subscription.close()
        assert served_by == "multi"
        # Served means every process swapped: no answer from the old version from now on.
        answers = predict_many(server, name, REQUESTS_PER_STEP)
        sent += len(answers)
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert {(a.json()["model_version"], *a.json()["predictions"]) for a in answers} == {
            (version, float(version))
        }
        ids = {a.headers[REQUEST_ID_HEADER] for a in answers}
        logged = wait_for(
            lambda ids=ids: (found := logged_replicas(redis_client, ids)).keys() == ids and found,
            15,
            what="every answer in the prediction log",
        )
        assert {entry.rsplit("@", 1)[1] for entry in logged.values()} == {version}
        seen |= {entry.rsplit("@", 1)[0] for entry in logged.values()}
    # Both processes answered (the kernel spreads connections), each under an id of its own.
    assert len(seen) == WORKERS and all(r.startswith("multi/") for r in seen), seen

    # Whichever process answers the scrape, it counts every process's predictions.
    for _ in range(6):
        samples = scrape(server.url)
        counted = sum(
            value(samples, "ml_predictions_total", model=name, version=v) for v in ("1", "2")
        )
        assert counted == sent
        assert value(samples, "ml_model_loaded", model=name, version="1") == 1
        assert value(samples, "ml_model_loaded", model=name, version="2") == 0
        requests = value(
            samples,
            "api_requests_total",
            method="POST",
            endpoint="/predict/{name}",
            status="200",
        )
        assert requests == sent
