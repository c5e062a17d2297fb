"""Every answered prediction reaches the prediction log, whatever protocol carried it, and
every failed request to a served version reaches the error count of its version.

A model server (signed in as the restricted `modelserver` Redis user, as deployed) appends to
the stream; a backend stores the records and answers the log's API. Both use a Redis of this
test's own, so no other test's backend consumes these records.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import redis
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from backend.app import create_app
from backend.prediction_store import prune, query, store_records
from backend.serving_stats import traffic
from mlops_core.database import upgrade_database
from mlops_core.model_registry import set_served_version
from mlops_core.prediction_log import (
    PREDICTION_LOG_STREAM,
    RECORD_FIELD,
    ErrorReason,
    PredictionErrorRecord,
    PredictionRecord,
    answered_fields,
    from_stream,
)
from mlops_core.settings import Settings
from model_server.prediction_log import DROPPED, PredictionLog
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import iris_like, register_version, unique
from tests.support.processes import wait_for
from tests.support.services import RedisServer

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]


def test_answered_predictions_are_logged_with_their_request_ids_and_queryable(
    registry: MlflowClient, mlflow_uri: str, serving_alias: str, start_server, tmp_path: Path
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_server = RedisServer(redis_dir)
    redis_server.start()
    try:
        x, y = iris_like()
        frame = pd.DataFrame(x, columns=FEATURES)
        name = unique("logged")
        version = register_version(LogisticRegression(max_iter=500).fit(frame, y), frame, name)
        set_served_version(registry, name, version, serving_alias)
        server = start_server(replica=unique("logged"), REDIS_URL=redis_server.model_server_url)

        database_url = f"sqlite:///{tmp_path / 'mlops.db'}"
        upgrade_database(database_url)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            redis_url=redis_server.url,
            mlops_home=tmp_path / "home",
            mlflow_tracking_uri=mlflow_uri,
            model_server_url=server.url,
            encryption_key=TEST_ENCRYPTION_KEY,
        )
        with TestClient(create_app(settings)) as backend, httpx.Client(timeout=30) as client:
            for i in range(5):
                answer = client.post(
                    f"{server.url}/predict/{name}",
                    json={"data": [ROW, ROW]},
                    headers={"X-Request-ID": f"req-{i}"},
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["X-Request-ID"] == answer.json()["request_id"] == f"req-{i}"
            infer = client.post(
                f"{server.url}/v2/models/{name}/infer",
                json={
                    "id": "infer-1",
                    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
                },
            )
            assert infer.status_code == 200 and infer.headers["X-Request-ID"] == "infer-1"
            generated = client.post(f"{server.url}/predict/{name}", json={"data": [ROW]})
            generated_id = generated.json()["request_id"]
            assert len(generated_id) == 32

            # Failed requests to the served version, on both protocols: answered under their
            # request id, counted as errors of the version, never listed as predictions.
            short = client.post(
                f"{server.url}/predict/{name}",
                json={"data": [ROW[:2]]},
                headers={"X-Request-ID": "bad-1"},
            )
            assert short.status_code == 422 and short.headers["X-Request-ID"] == "bad-1"
            garbled = client.post(
                f"{server.url}/predict/{name}",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            assert garbled.status_code == 400 and len(garbled.headers["X-Request-ID"]) == 32
            misshaped = client.post(
                f"{server.url}/v2/models/{name}/infer",
                json={
                    "id": "bad-2",
                    "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ROW[:3]}],
                },
            )
            assert misshaped.status_code == 422 and misshaped.headers["X-Request-ID"] == "bad-2"

            def logged() -> int:
                return backend.get(f"/models/{name}/predictions").json()["total"]

            def failed() -> int:
                versions = backend.get(f"/models/{name}/traffic").json()["versions"]
                return versions.get(version, {}).get("errors", 0)

            wait_for(lambda: failed() == 3, 30, 0.2, "3 failed requests counted")
            wait_for(lambda: logged() == 7, 30, 0.2, "7 predictions in the log")
            traffic = backend.get(f"/models/{name}/traffic").json()
            served = traffic["versions"][version]
            assert served["requests"] == 7 and served["error_rate"] == 3 / 10
            assert served["error_reasons"] == {"bad_input": 3}
            assert sum(b["errors"] for b in traffic["buckets"]) == 3
            assert all(b["version"] == version for b in traffic["buckets"])
            page = backend.get(f"/models/{name}/predictions", params={"size": 10}).json()
            newest = page["items"][0]
            assert newest["request_id"] == generated_id  # newest first
            first = next(item for item in page["items"] if item["request_id"] == "req-0")
            assert first["version"] == version and first["model"] == name
            assert first["inputs"] == [dict(zip(FEATURES, ROW, strict=True))] * 2
            assert first["predictions"] == [0, 0]
            assert len(first["probabilities"]) == 2 and first["latency_ms"] > 0
            assert first["replica"] == server.replica

            def total(**params: str | int) -> int:
                return backend.get(f"/models/{name}/predictions", params=params).json()["total"]

            assert total(version=version) == 7
            assert total(version="999") == 0
            assert total(since="2999-01-01T00:00:00Z") == 0
            second_page = backend.get(
                f"/models/{name}/predictions", params={"size": 3, "page": 3}
            ).json()
            assert len(second_page["items"]) == 1 and second_page["total"] == 7

            export = backend.get("/predictions/history", params={"model": name, "format": "csv"})
            assert export.status_code == 200 and export.headers["content-type"].startswith(
                "text/csv"
            )
            rows = list(csv.DictReader(io.StringIO(export.text)))
            assert {row["request_id"] for row in rows} == {
                *(f"req-{i}" for i in range(5)),
                "infer-1",
                generated_id,
            }
            assert all(row["version"] == version for row in rows)

            # Ground truth later: 5 two-row requests (the last two half wrong), the infer
            # request's one row; an unknown id and a label count that does not fit are reported.
            items = [{"request_id": f"req-{i}", "label": [0, 0]} for i in range(3)]
            items += [{"request_id": f"req-{i}", "label": [0, 1]} for i in (3, 4)]
            items += [
                {"request_id": "infer-1", "label": 0},
                {"request_id": "nope", "label": 1},
                {"request_id": generated_id, "label": [0, 1, 2]},
            ]
            feedback = backend.post(f"/models/{name}/feedback", json={"items": items})
            assert feedback.status_code == 200, feedback.text
            assert feedback.json()["accepted"] == 6 and feedback.json()["unknown"] == ["nope"]
            assert (
                "3 label(s) for a request of 1 row(s)" in feedback.json()["rejected"][generated_id]
            )
            quality = backend.get(f"/models/{name}/quality").json()
            assert quality["versions"] == [
                {"version": version, "metric": "accuracy", "value": 9 / 11, "rows": 11}
            ]
            scraped = backend.get("/metrics").text
            series = f'ml_live_metric{{metric="accuracy",model="{name}",version="{version}"}}'
            assert f"{series} {9 / 11}" in scraped
            refused = backend.post(f"/models/{name}/feedback", json={"label": 1})
            assert refused.status_code == 422

            drift = backend.get(f"/models/{name}/drift").json()
            assert drift["version"] == version and drift["drift_detected"] is None
            assert drift["reference"]["source"] == "first_predictions"
            assert "not enough rows yet" in drift["detail"]
            status = backend.get("/drift-status").json()["models"]
            assert [entry["model"] for entry in status] == [name]
            assert backend.get("/models/never-logged/drift").status_code == 404

            # Regression (found by the schema fuzzer): a V2 id that no HTTP header can carry
            # made the answer a 500; it is echoed in the body and logged under a generated id.
            unicode_id = "naïve-ид-\U0001f600"
            odd = client.post(
                f"{server.url}/v2/models/{name}/infer",
                json={
                    "id": unicode_id,
                    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
                },
            )
            assert odd.status_code == 200 and odd.json()["id"] == unicode_id
            assert len(odd.headers["X-Request-ID"]) == 32
    finally:
        redis_server.stop()


def _record(
    request_id: str, at: datetime, version: str = "1", latency_ms: float = 1.0
) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        at=at,
        model="m",
        version=version,
        replica="r",
        inputs=[{"a": 1.0}],
        predictions=[0],
        latency_ms=latency_ms,
    )


def _failure(
    request_id: str, at: datetime, version: str = "1", reason: str = "bad_input"
) -> PredictionErrorRecord:
    return PredictionErrorRecord(
        request_id=request_id,
        at=at,
        model="m",
        version=version,
        replica="r",
        reason=ErrorReason(reason),
        status=503 if reason == "unavailable" else 422,
    )


def test_a_record_read_twice_is_stored_once_and_old_or_excess_rows_are_pruned(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade_database(database_url)
    now = datetime.now(UTC)
    entries = [(f"{i}-0", _record(f"r{i}", now - timedelta(days=i * 10))) for i in range(5)]
    assert store_records(database_url, entries) == 5
    assert store_records(database_url, entries[:2]) == 0  # redelivered after a crash
    assert query(database_url, model="m").total == 5

    assert prune(database_url, retention_days=25, max_rows=100, now=now) == 2  # 30 and 40 days
    assert prune(database_url, retention_days=25, max_rows=2, now=now) == 1  # the oldest left
    assert [row.request_id for row in query(database_url, model="m").items] == ["r0", "r1"]


def test_failed_requests_are_stored_once_apart_from_predictions_and_pruned_alike(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade_database(database_url)
    now = datetime.now(UTC)
    entries = [
        ("1-0", _record("ok", now)),
        ("2-0", _failure("e0", now)),
        ("3-0", _failure("e1", now - timedelta(days=40))),
    ]
    assert store_records(database_url, entries) == 3
    assert store_records(database_url, entries) == 0  # redelivered after a crash
    assert [row.request_id for row in query(database_url, model="m").items] == ["ok"]

    assert prune(database_url, retention_days=25, max_rows=100, now=now) == 1  # e1, 40 days
    recent = traffic(database_url, "m", hours=1, buckets=1, now=now + timedelta(seconds=1))
    assert recent.versions["1"].error_count == 1


def test_traffic_counts_errors_per_version_and_bucket_beside_answered_requests(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade_database(database_url)
    now = datetime.now(UTC)
    early, late = now - timedelta(minutes=50), now - timedelta(minutes=10)
    entries: list[tuple[str, PredictionRecord | PredictionErrorRecord]] = [
        *((f"{i}-0", _record(f"a{i}", early, "1", latency_ms=float(i))) for i in range(1, 4)),
        ("10-0", _failure("f1", early, "1", "model_error")),
        ("11-0", _failure("f2", late, "1", "bad_input")),
        ("12-0", _failure("f3", late, "1", "bad_input")),
        ("20-0", _record("b1", late, "2")),
        ("21-0", _failure("g1", late, "2", "unavailable")),
    ]
    store_records(database_url, entries)

    found = traffic(database_url, "m", hours=1, buckets=2, now=now)
    one, two = found.versions["1"], found.versions["2"]
    assert (one.requests, one.errors, one.error_rate) == (
        3,
        {"model_error": 1, "bad_input": 2},
        3 / 6,
    )
    assert one.p50_ms == 2.0
    assert (two.requests, two.errors, two.error_rate) == (1, {"unavailable": 1}, 1 / 2)
    by_bucket = {(b.start, b.version): b.latency for b in found.buckets}
    assert len(by_bucket) == 3
    first = by_bucket[(found.since, "1")]
    assert (first.requests, first.error_count) == (3, 1)
    # The later bucket of version 1 only failed: no latency, every request an error.
    only_failed = by_bucket[(found.since + timedelta(minutes=30), "1")]
    assert (only_failed.requests, only_failed.p50_ms, only_failed.error_rate) == (0, None, 1.0)


def test_an_answer_that_makes_no_valid_record_is_dropped_and_counted_not_fatal(
    redis_url: str,
) -> None:
    """Regression: a record that could not be written raised in the flush and ended the log's
    task, after which every later record was dropped as buffer_full."""
    settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
    log = PredictionLog(settings, "replica-x")
    before = DROPPED.labels("unrecordable")._value.get()
    good, bad = f"good-{uuid.uuid4().hex}", f"bad-{uuid.uuid4().hex}"
    log.record(bad, "m", "1", None, [[1.0]], [0], [[object()]], 1.0)  # type: ignore[list-item]
    log.record(good, "m", "1", None, [[1.0]], [0], [[0.5, 0.5]], 1.0)
    log._append(log._take())
    assert DROPPED.labels("unrecordable")._value.get() == before + 1
    client = redis.Redis.from_url(redis_url)
    entries = client.xrevrange(PREDICTION_LOG_STREAM, count=50)
    ids = {
        PredictionRecord.from_stream(fields).request_id
        for _, fields in entries
        if RECORD_FIELD.encode() in fields
    }
    client.close()
    assert good in ids and bad not in ids


def test_answered_entries_are_read_back_with_rows_keyed_by_name_or_position() -> None:
    """The model server writes rows as columns + array (one orjson call per answer); readers
    get the keyed rows the log has always stored."""
    at = datetime.now(UTC)
    common = {"at": at, "model": "m", "version": "3", "replica": "r", "latency_ms": 1.5}
    named = answered_fields(
        request_id="named",
        columns=("sepal_length", "sepal_width"),
        rows=np.array([[5.1, 3.5], [6.2, 2.9]]),
        predictions=np.array([0, 1]),
        probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]),
        shadow=True,
        **common,
    )
    record = from_stream({k.encode(): v for k, v in named.items()})
    assert isinstance(record, PredictionRecord)
    assert record.inputs == [
        {"sepal_length": 5.1, "sepal_width": 3.5},
        {"sepal_length": 6.2, "sepal_width": 2.9},
    ]
    assert (record.predictions, record.probabilities) == ([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    assert (record.request_id, record.at, record.version, record.shadow) == ("named", at, "3", True)
    positional = answered_fields(
        request_id="positional",
        columns=None,
        rows=[[1.0, 2.0, 3.0]],
        predictions=["a"],
        probabilities=None,
        **common,
    )
    record = from_stream({k.encode(): v for k, v in positional.items()})
    assert record.inputs == [{"0": 1.0, "1": 2.0, "2": 3.0}]
    assert record.probabilities is None
    # Rows with text (an object array) are written too, not dropped as unrecordable.
    text = answered_fields(
        request_id="text",
        columns=("city", "rooms"),
        rows=np.array([["Lyon", 3]], dtype=object),
        predictions=np.array(["high"]),
        probabilities=None,
        **common,
    )
    record = from_stream({k.encode(): v for k, v in text.items()})
    assert (record.inputs, record.predictions) == ([{"city": "Lyon", "rooms": 3}], ["high"])
