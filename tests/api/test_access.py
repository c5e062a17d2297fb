"""Access: scoped tokens guard each kind of REST call; the webhook relies on its signature.

API_TOKEN (admin) guards state changes and opens every guard; API_READ_TOKEN guards reads,
PREDICT_TOKEN predictions, METRICS_TOKEN /metrics. The log WebSocket's guard is tested against a
real server in tests/logs/test_log_access.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.routing import APIRoute

from backend.api_docs import DOCS_PATHS
from backend.auth import TokenRedactor, redact_token_query
from tests.api.conftest import NOTEBOOK, Api, github_url
from tests.support.github import delivery, push_payload

TOKEN = "s3cret-api-token"


def test_with_token_state_changes_need_the_bearer_token(make_api: Callable[..., Api]) -> None:
    api = make_api(api_token=TOKEN)
    body = {"github_url": github_url()}

    missing = api.client.post("/repos", json=body)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        refused = api.client.post("/repos", json=body, headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert "invalid API token" in refused.json()["detail"]
    assert api.client.get("/repos").json() == []

    repo = api.register(body["github_url"])  # sends the right token
    guarded = [
        ("post", f"/repos/{repo['id']}/trigger"),
        ("post", "/pipelines/1/cancel"),
        ("post", "/pipelines/1/retry"),
        ("delete", f"/repos/{repo['id']}"),
    ]
    for method, path in guarded:
        assert getattr(api.client, method)(path).status_code == 401, path
    assert len(api.pipelines()) == 0

    # Reads stay open; the webhook is guarded by its signature, not by the token.
    assert api.client.get("/repos").status_code == 200
    assert api.client.get("/pipelines").status_code == 200
    push = push_payload(repo["github_url"], modified=[NOTEBOOK])
    assert api.deliver(delivery(push, repo["webhook_secret"])).status_code == 202

    headers = api.auth_headers()
    assert api.client.post(f"/repos/{repo['id']}/trigger", headers=headers).status_code == 202
    assert api.client.post("/pipelines/1/cancel", headers=headers).status_code == 200
    assert api.client.delete(f"/repos/{repo['id']}", headers=headers).status_code == 204


def test_without_tokens_calls_are_open_and_a_warning_names_each(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="backend.auth"):
        api = make_api(api_token=None)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "backend.auth"]
    for setting in ("API_TOKEN", "API_READ_TOKEN", "PREDICT_TOKEN", "METRICS_TOKEN"):
        assert f"({setting} is not set)" in warning
    repo = api.register()
    assert api.client.post(f"/repos/{repo['id']}/trigger").status_code == 202
    assert api.client.get("/pipelines").status_code == 200
    assert api.client.get("/metrics").status_code == 200


def test_the_warning_names_only_what_is_open(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="backend.auth"):
        make_api(api_token=TOKEN)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "backend.auth"]
    assert "(API_TOKEN is not set)" not in warning
    assert "(API_READ_TOKEN is not set)" in warning
    assert "named admin token of API_TOKENS" in warning  # the other way to close the guards
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="backend.auth"):
        make_api(**ALL_TOKENS)
    assert not [r for r in caplog.records if r.name == "backend.auth"]


# --- Scoped tokens: API_TOKEN (admin), API_READ_TOKEN, PREDICT_TOKEN, METRICS_TOKEN ---------

ADMIN = "admin-token-Aa1"
READ = "read-token-Bb2"
PREDICT = "predict-token-Cc3"
METRICS = "metrics-token-Dd4"
ALL_TOKENS = {
    "api_token": ADMIN,
    "api_read_token": READ,
    "predict_token": PREDICT,
    "metrics_token": METRICS,
}
WRONG = "not-a-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, problem: str) -> None:
    """A 401 naming the problem and the setting, challenging for Bearer, echoing no token."""
    assert response.status_code == 401, response.text
    detail = response.json()["detail"]
    assert detail.startswith(problem), detail
    assert "Authorization: Bearer <" in detail
    assert response.headers["WWW-Authenticate"] == "Bearer"
    for token in (ADMIN, READ, PREDICT, METRICS, WRONG):
        assert token not in response.text


# Which guard each route of the app meets (the open ones stay open with every token set).
GUARD_OF = {"GET": "read", "POST": "API", "PATCH": "API", "DELETE": "API"}
SPECIAL = {
    ("GET", "/metrics"): "metrics",
    ("POST", "/models/{name}/predict"): "predict",
}
# The API's documentation pages stay public, as FastAPI's own are (what routes exist is no secret;
# every route they describe keeps its guard).
OPEN = {"/health", "/ready", "/webhook/github", "/", *DOCS_PATHS, "/docs/oauth2-redirect"}


def test_every_route_meets_its_guard(make_api: Callable[..., Api]) -> None:
    """A route added later without a guard fails here, not in production."""
    api = make_api(**ALL_TOKENS)
    checked = 0
    for route in api.client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute) or route.path in OPEN or route.path.startswith("/ui"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in route.methods:
            kind = SPECIAL.get((method, route.path), GUARD_OF[method])
            assert_refused(api.client.request(method, path), f"missing {kind} token")
            checked += 1
    assert checked >= 18  # the loop saw the routes (more may be added)


def test_reads_take_the_read_or_admin_token_only(make_api: Callable[..., Api]) -> None:
    api = make_api(**ALL_TOKENS)
    repo = api.register()
    assert api.client.post(f"/repos/{repo['id']}/trigger", headers=bearer(ADMIN)).status_code == 202
    reads = ["/repos", f"/repos/{repo['id']}", "/pipelines", "/pipelines/1", "/pipelines/1/logs"]
    for path in reads:
        assert_refused(api.client.get(path), "missing read token")
        for token in (WRONG, PREDICT, METRICS):
            assert_refused(api.client.get(path, headers=bearer(token)), "invalid read token")
        for token in (READ, ADMIN):
            assert api.client.get(path, headers=bearer(token)).status_code == 200, (path, token)
    # Model reads meet the same guard before the registry is asked anything.
    for path in ("/models", "/models/iris", "/models/iris/history"):
        assert_refused(api.client.get(path, headers=bearer(PREDICT)), "invalid read token")


def test_writes_take_only_the_admin_token(make_api: Callable[..., Api]) -> None:
    api = make_api(**ALL_TOKENS)
    for token in (READ, PREDICT, METRICS):
        refused = api.client.post(
            "/repos", json={"github_url": github_url()}, headers=bearer(token)
        )
        assert_refused(refused, "invalid API token")
    assert api.client.get("/repos", headers=bearer(READ)).json() == []


def test_predict_takes_the_predict_or_admin_token_only(make_api: Callable[..., Api]) -> None:
    api = make_api(**ALL_TOKENS)
    body = {"data": [[5.1, 3.5, 1.4, 0.2]]}
    assert_refused(api.client.post("/models/iris/predict", json=body), "missing predict token")
    for token in (WRONG, READ, METRICS):
        refused = api.client.post("/models/iris/predict", json=body, headers=bearer(token))
        assert_refused(refused, "invalid predict token")
    for token in (PREDICT, ADMIN):
        # Past the guard, the (absent) model server is what answers.
        forwarded = api.client.post("/models/iris/predict", json=body, headers=bearer(token))
        assert forwarded.status_code == 503, forwarded.text


def test_metrics_take_the_metrics_or_admin_token_and_probes_stay_open(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**ALL_TOKENS)
    assert_refused(api.client.get("/metrics"), "missing metrics token")
    for token in (WRONG, READ, PREDICT):
        assert_refused(api.client.get("/metrics", headers=bearer(token)), "invalid metrics token")
    for token in (METRICS, ADMIN):
        assert api.client.get("/metrics", headers=bearer(token)).status_code == 200
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/ready").status_code == 503  # answers (MLflow is down), no token asked
    page = api.client.get("/ui/")
    assert page.status_code == 200
    assert 'data-auth-required="true"' in page.text
    for token in ALL_TOKENS.values():
        assert token not in page.text

    unguarded = make_api(api_token=ADMIN, api_read_token=READ)
    assert unguarded.client.get("/metrics").status_code == 200  # open without METRICS_TOKEN


def test_the_access_log_never_holds_a_token() -> None:
    assert (
        redact_token_query("/ws/pipelines/3/logs?after=5&token=s3cret&x=1")
        == "/ws/pipelines/3/logs?after=5&token=[redacted]&x=1"
    )
    assert redact_token_query("GET /logs?tok%65n=s3cret HTTP/1.1") == (
        "GET /logs?token=[redacted] HTTP/1.1"
    )
    assert redact_token_query("/pipelines?after=2") == "/pipelines?after=2"
    # At debug level the WebSocket library logs each request header as ("< %s: %s", name, value).
    record = logging.LogRecord(
        "uvicorn.error",
        logging.DEBUG,
        "",
        0,
        "< %s: %s",
        ("Sec-WebSocket-Protocol", "bearer, x"),
        None,
    )
    TokenRedactor().filter(record)
    assert record.getMessage() == "< Sec-WebSocket-Protocol: [redacted]"
