"""`mlops predictions`, `mlops drift` and `mlops feedback` against a real backend process.

The prediction log is filled the way the backend's stream consumer fills it (`store_records`),
so each test controls exactly which predictions exist; tests/serving/test_prediction_log.py
covers the model server → stream → database path itself.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.prediction_store import store_records
from mlops_cli.main import main as cli_main
from mlops_cli.monitoring import read_labels
from mlops_core.database import session_scope
from mlops_core.prediction_log import PredictionRecord
from mlops_core.schema import ModelReference
from tests.api.conftest import LiveBackend, dead_url

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ADMIN_TOKEN = "cli-monitoring-admin-token"


def unique_model() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def log_predictions(
    database_url: str,
    model: str,
    version: str,
    request_ids: list[str],
    *,
    rows: list[list[float]] | None = None,
    predictions: list[Any] | None = None,
    start: datetime | None = None,
) -> None:
    """One classifier's answer logged per request id, a millisecond apart, each holding `rows`
    (default one row)."""
    first = start or datetime.now(UTC) - timedelta(minutes=5)
    request_rows = rows or [[5.1, 3.5, 1.4, 0.2]]
    store_records(
        database_url,
        [
            (
                f"{uuid.uuid4().int % 10**12}-{i}",
                PredictionRecord(
                    request_id=request_id,
                    at=first + timedelta(milliseconds=i),
                    model=model,
                    version=version,
                    replica="replica-a",
                    inputs=[dict(zip(FEATURES, row, strict=True)) for row in request_rows],
                    predictions=predictions or [0] * len(request_rows),
                    # A classifier's answer (live quality is then accuracy).
                    probabilities=[[0.8, 0.1, 0.1]] * len(request_rows),
                    latency_ms=1.5,
                ),
            )
            for i, request_id in enumerate(request_ids)
        ],
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def backend(
    start_backend: Callable[..., LiveBackend], any_database_url: str, queue_redis_url: str
) -> LiveBackend:
    return start_backend(
        DATABASE_URL=any_database_url,
        REDIS_URL=queue_redis_url,
        API_TOKEN=ADMIN_TOKEN,
        DRIFT_MIN_ROWS="30",
    )


def test_mlops_predictions_lists_filters_pages_and_exports(
    backend: LiveBackend, any_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_model()
    log_predictions(any_database_url, name, "1", [f"v1-{i}" for i in range(520)])
    later = datetime.now(UTC) - timedelta(minutes=1)
    log_predictions(any_database_url, name, "2", ["v2-0", "v2-1"], start=later)
    api = ["--api", backend.url]

    code, out, _ = run(capsys, "predictions", name, *api, "--size", "3")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split()[:4] == ["AT", "VERSION", "REQUEST", "ID"]
    assert [line.split()[2] for line in lines[1:4]] == ["v2-1", "v2-0", "v1-519"]  # newest first
    assert lines[-1] == "3 of 522 logged predictions"
    assert '{"sepal_length": 5.1' in lines[1]

    code, out, _ = run(capsys, "predictions", name, *api, "--version", "2")
    assert code == 0 and out.splitlines()[-1] == "2 of 2 logged predictions"
    since = (later - timedelta(seconds=1)).isoformat()
    code, out, _ = run(capsys, "predictions", name, *api, "--since", since, "--json")
    assert code == 0
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == ["v2-1", "v2-0"]

    # More than the backend's page of 500: fetched page by page, none twice.
    code, out, _ = run(capsys, "predictions", name, *api, "--json", "--size", "510")
    ids = [json.loads(line)["request_id"] for line in out.splitlines()]
    assert code == 0 and len(ids) == len(set(ids)) == 510

    code, out, _ = run(capsys, "predictions", name, *api, "--csv", "--size", "4")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [row["request_id"] for row in rows] == ["v2-1", "v2-0", "v1-519", "v1-518"]
    assert json.loads(rows[0]["inputs"]) == [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))]

    code, _, err = run(capsys, "predictions", name, *api, "--since", "yesterday")
    assert code == 64 and "expected an ISO 8601 time" in err
    code, _, err = run(capsys, "predictions", name, *api, "--csv", "--json")
    assert code == 64 and "--csv and --json cannot be used together" in err


def test_mlops_drift_prints_each_feature_and_exits_1_on_drift(
    backend: LiveBackend, any_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_model()
    # Petal width takes 5 values: Evidently's rule makes it categorical (chi-square).
    training = [
        [5.0 + i % 10 * 0.1, 3.0 + i % 7 * 0.1, 1.5 + i % 9 * 0.3, 0.2 + i % 5 * 0.2]
        for i in range(60)
    ]
    shifted = [[a, b, c + 2.0, d] for a, b, c, d in training]
    with session_scope(any_database_url) as session:
        for version in ("1", "2"):
            session.add(
                ModelReference(
                    model_name=name,
                    model_version=version,
                    rows=[dict(zip(FEATURES, row, strict=True)) for row in training],
                )
            )
    log_predictions(any_database_url, name, "1", ["same"], rows=training)
    log_predictions(any_database_url, name, "2", ["moved"], rows=shifted)
    api = ["--api", backend.url]

    code, out, _ = run(capsys, "drift", name, *api, "--version", "1")
    assert code == 0
    assert out.splitlines()[0] == f"{name} v1: no drift (4 features)"
    assert "reference: training, 60 rows; current: 60 rows since" in out

    code, out, _ = run(capsys, "drift", name, *api)  # the version that answered last: 2
    lines = out.splitlines()
    assert code == 1
    assert lines[0] == f"{name} v2: drift in petal_length (1 of 4 features)"
    table = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(table) == set(FEATURES)
    assert table["petal_length"][1] == "ks" and table["petal_length"][-1] == "yes"
    assert table["sepal_length"][-1] == "no"

    code, out, _ = run(capsys, "drift", name, *api, "--json")
    report = json.loads(out)
    assert code == 1 and report["drifted_features"] == ["petal_length"]

    unknown_version = run(capsys, "drift", name, *api, "--version", "9")
    assert unknown_version[0] == 0 and "cannot tell yet: not enough rows yet" in unknown_version[1]
    code, _, err = run(capsys, "drift", unique_model(), *api)
    assert code == 3 and "has no logged prediction" in err


def test_mlops_feedback_sends_a_file_in_batches_and_names_what_was_not_stored(
    backend: LiveBackend,
    any_database_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)  # only --token authenticates here
    name = unique_model()
    log_predictions(any_database_url, name, "1", [f"r{i}" for i in range(10)])
    pair = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    log_predictions(any_database_url, name, "1", ["pair", "pair-2"], rows=pair, predictions=[0, 2])
    api = ["--api", backend.url, "--token", ADMIN_TOKEN]

    labels = tmp_path / "labels.csv"
    lines = ["request_id,label,note"]
    lines += [f"r{i},{0 if i < 8 else 1},x" for i in range(10)]  # two of ten wrong
    lines += ['pair,"[0, 2]",x', "pair-2,0,x", "ghost,1,x"]
    labels.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "feedback", name, *api, "--file", str(labels), "--batch-size", "4")
    assert code == 1
    assert out.splitlines()[0] == "accepted 11, unknown 1, rejected 1 (of 13 labels)"
    assert "  ghost" in out.splitlines()
    assert "  pair-2: 1 label(s) for a request of 2 row(s)" in out.splitlines()
    quality = httpx.get(f"{backend.url}/models/{name}/quality", timeout=10).json()
    assert quality["versions"] == [
        {"version": "1", "metric": "accuracy", "value": 10 / 12, "rows": 12}
    ]

    # JSON lines, every id known: stored, exit 0 (sent again: the labels are replaced).
    json_lines = tmp_path / "labels.jsonl"
    json_lines.write_text(
        "\n".join(json.dumps({"request_id": f"r{i}", "label": 0}) for i in range(10)) + "\n\n"
    )
    code, out, _ = run(capsys, "feedback", name, *api, "--file", str(json_lines), "--json")
    assert code == 0 and json.loads(out) == {"accepted": 10, "unknown": [], "rejected": {}}
    quality = httpx.get(f"{backend.url}/models/{name}/quality", timeout=10).json()
    assert quality["versions"][0]["value"] == 12 / 12

    no_label = tmp_path / "bad.csv"
    no_label.write_text("request_id,prediction\nr0,1\n")
    code, _, err = run(capsys, "feedback", name, *api, "--file", str(no_label))
    assert code == 64 and "needs the columns request_id and label (missing: label)" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request_id": "r0", "label": 0}\n{"request_id": "r1", \n')
    code, _, err = run(capsys, "feedback", name, *api, "--file", str(broken))
    assert code == 64 and "line 2: not JSON" in err

    code, _, err = run(capsys, "feedback", name, "--api", backend.url, "--file", str(labels))
    assert code == 4 and "401" in err and "--token" in err
    code, _, err = run(capsys, "feedback", name, "--api", dead_url(), "--file", str(labels))
    assert code == 4 and "0 of 13 labels were sent before this error" in err


def test_labels_read_as_numbers_lists_or_text_from_csv_or_json_lines() -> None:
    csv_text = 'request_id,label\na,1\nb,2.5\nc,"[0, 1]"\nd,setosa\ne,true\nf,"""x"""\n'
    assert read_labels(io.StringIO(csv_text)) == [
        ("a", 1),
        ("b", 2.5),
        ("c", [0, 1]),
        ("d", "setosa"),
        ("e", "true"),
        ("f", '"x"'),
    ]
    lines = '\n  {"request_id": "a", "label": "1"}\n{"request_id": "b", "label": [true]}\n'
    assert read_labels(io.StringIO(lines)) == [("a", "1"), ("b", [True])]
