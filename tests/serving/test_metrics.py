"""A model server's Prometheus metrics count what its clients did, labelled as a scraper needs."""

from __future__ import annotations

from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from tests.serving.conftest import iris_like, register_version, unique

ROW = [5.1, 3.5, 1.4, 0.2]


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, dict[tuple, float]]:
    """Sample name → {sorted label items: value} from a /metrics answer."""
    answer = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10)
    answer.raise_for_status()
    samples: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return samples[name].get(tuple(sorted(labels.items())), 0.0)


def infer_body(rows: list[list[float]]) -> dict:
    data = [v for row in rows for v in row]
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": data}]}


def test_predictions_loads_and_requests_are_counted_per_version_and_route(
    registry, start_server, move_alias
) -> None:
    x, y = iris_like()
    name = unique("metered")
    v1 = register_version(LogisticRegression(max_iter=500).fit(x, y), x, name)
    v2 = register_version(LogisticRegression(max_iter=500, C=0.1).fit(x, y), x, name)
    server = start_server(replica=unique("metered"))
    move_alias(name, v1)
    server.wait_serving(name, v1)

    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(5):
            assert client.post(f"/predict/{name}", json={"data": [ROW, ROW]}).status_code == 200
        for _ in range(3):
            assert client.post(f"/v2/models/{name}/infer", json=infer_body([ROW])).is_success
        assert client.post(f"/predict/{name}", json={"data": [[1.0]]}).status_code == 422
        assert client.post("/predict/no-such-model", json={"data": [ROW]}).status_code == 404
    move_alias(name, v2)
    server.wait_serving(name, v2)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(4):
            assert client.post(f"/predict/{name}", json={"data": [ROW]}).status_code == 200

    samples = scrape(server.url)
    # Every predict path, by version: 5 + 3 before the swap, 4 after.
    assert value(samples, "ml_predictions_total", model=name, version=v1) == 8
    assert value(samples, "ml_predictions_total", model=name, version=v2) == 4
    assert value(samples, "ml_prediction_duration_seconds_count", model=name, version=v1) == 8
    assert value(samples, "ml_prediction_errors_total", model=name, reason="bad_input") == 1
    assert value(samples, "ml_model_load_total", model=name, result="success") == 2
    assert value(samples, "ml_model_loaded", model=name, version=v2) == 1
    assert value(samples, "ml_model_loaded", model=name, version=v1) == 0
    # Route templates, never raw paths: the unknown model shares the template's series.
    predict = {"method": "POST", "endpoint": "/predict/{name}"}
    assert value(samples, "api_requests_total", status="200", **predict) == 9
    assert value(samples, "api_requests_total", status="422", **predict) == 1
    assert value(samples, "api_requests_total", status="404", **predict) == 1
    infer = {"method": "POST", "endpoint": "/v2/models/{name}/infer"}
    assert value(samples, "api_requests_total", status="200", **infer) == 3
    assert value(samples, "api_request_duration_seconds_count", **predict) == 11
    assert not any(
        name in dict(labels).get("endpoint", "") for labels in samples["api_requests_total"]
    )
    assert value(samples, "process_memory_rss_bytes") > 10_000_000
    assert value(samples, "process_thread_count") >= 1


def test_metrics_take_their_own_token_when_set(start_server) -> None:
    server = start_server(replica=unique("metered-token"), METRICS_TOKEN="scrape-me")
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    samples = scrape(server.url, {"Authorization": "Bearer scrape-me"})
    assert "process_thread_count" in samples
