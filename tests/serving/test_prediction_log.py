"""Every answered prediction reaches the prediction log, whatever protocol carried it.

A model server (signed in as the restricted `modelserver` Redis user, as deployed) appends to
the stream; a backend stores the records and answers the log's API. Both use a Redis of this
test's own, so no other test's backend consumes these records.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from backend.app import create_app
from backend.prediction_store import prune, query, store_records
from mlops_core.database import upgrade_database
from mlops_core.model_registry import set_served_version
from mlops_core.prediction_log import PredictionRecord
from mlops_core.settings import Settings
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

            def logged() -> int:
                return backend.get(f"/models/{name}/predictions").json()["total"]

            wait_for(lambda: logged() == 7, 30, 0.2, "7 predictions in the log")
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
    finally:
        redis_server.stop()


def _record(request_id: str, at: datetime) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        at=at,
        model="m",
        version="1",
        replica="r",
        inputs=[{"a": 1.0}],
        predictions=[0],
        latency_ms=1.0,
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
