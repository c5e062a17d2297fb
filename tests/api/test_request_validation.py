"""Hostile requests get a 4xx naming the problem, never a 500: integers past 64 bits, model names
the registry cannot hold, and JSON nested thousands deep, on every route that takes them.

The integer and model-name cases are driven by the backend's own OpenAPI document, so a route
added later is covered without being listed here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from starlette.websockets import WebSocketDisconnect

from backend.api_params import INT64_MAX, INT64_MIN, ROW_ID_MAX, ROW_ID_MIN
from mlops_core import request_limits
from mlops_core.model_names import model_name_problem
from mlops_core.request_limits import JsonDepthGauge, JsonTooDeep, check_json_depth
from tests.api.conftest import Api
from tests.support.github import delivery, push_payload

OVERFLOW = 2**63
DEPTH_LIMIT = 64


def operations(api: Api) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) for every operation in the backend's OpenAPI."""
    for path, item in api.client.get("/openapi.json").json()["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def fill(path: str, values: dict[str, str]) -> str:
    """The path with each `{param}` replaced: by `values[param]`, else a harmless default."""
    for segment in path.split("/"):
        if segment.startswith("{"):
            name = segment.strip("{}")
            path = path.replace(segment, values.get(name, "1" if name.endswith("id") else "m"))
    return path


def int_parameters(api: Api) -> list[tuple[str, str, str, str]]:
    """(method, path, location, name) of every integer path or query parameter."""
    found = []
    for method, path, operation in operations(api):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            types = [schema.get("type")] + [
                option.get("type") for option in schema.get("anyOf", [])
            ]
            if "integer" in types and parameter["in"] in ("path", "query"):
                found.append((method, path, parameter["in"], parameter["name"]))
    return found


def call(api: Api, method: str, path: str, location: str, name: str, value: int) -> Any:
    if location == "path":
        return api.client.request(method, fill(path, {name: str(value)}))
    return api.client.request(method, fill(path, {}), params={name: str(value)})


def test_every_integer_parameter_past_64_bits_is_a_422_naming_it(api: Api) -> None:
    parameters = int_parameters(api)
    named = {(path, name) for _, path, _, name in parameters}
    assert {
        ("/repos/{repo_id}", "repo_id"),
        ("/repos/{repo_id}/trigger", "repo_id"),
        ("/pipelines", "page"),
        ("/pipelines", "repo_id"),
        ("/pipelines/{pipeline_id}", "pipeline_id"),
        ("/pipelines/{pipeline_id}/cancel", "pipeline_id"),
        ("/pipelines/{pipeline_id}/retry", "pipeline_id"),
        ("/pipelines/{pipeline_id}/logs", "after"),
    } <= named
    for method, path, location, name in parameters:
        for value in (OVERFLOW, -OVERFLOW - 1, 99999999999999999999, 10750465969512470528):
            response = call(api, method, path, location, name, value)
            assert response.status_code == 422, (method, path, name, value, response.text)
            locations = [error["loc"] for error in response.json()["detail"]]
            assert [location, name] in locations, (method, path, response.text)


def test_integers_at_the_64_bit_limits_reach_the_handlers(api: Api) -> None:
    """The extremes the type allows must not overflow anything further down either."""
    for method, path, location, name in int_parameters(api):
        for value in (INT64_MAX, INT64_MIN, ROW_ID_MAX, ROW_ID_MIN):
            response = call(api, method, path, location, name, value)
            assert response.status_code < 500, (method, path, name, value, response.text)
    last_page = api.client.get("/pipelines", params={"page": INT64_MAX // 100, "size": 100})
    assert last_page.status_code == 200, last_page.text
    assert last_page.json()["items"] == []


def test_the_dashboard_and_the_log_socket_bound_their_ids_too(api: Api) -> None:
    response = api.client.get(f"/ui/pipelines/{OVERFLOW}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "pipeline_id"]
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        api.client.websocket_connect(f"/ws/pipelines/{OVERFLOW}/logs") as socket,
    ):
        socket.receive_text()
    assert closed.value.code == 1008  # policy violation: the request was invalid


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a:b", "'/' or ':'"),
        ("k\x0e", "control characters"),
        ("tab\there", "control characters"),
        (" ", "empty"),
        ("..hidden", "'..'"),
    ],
)
def test_model_names_the_registry_cannot_hold_are_422_on_every_model_route(
    api: Api, name: str, problem: str
) -> None:
    checked = 0
    for method, path, _ in operations(api):
        if "{name}" not in path:
            continue
        body = {"version": "1"} if method == "POST" else None
        response = api.client.request(
            method, path.replace("{name}", quote(name, safe="")), json=body
        )
        assert response.status_code == 422, (method, path, response.text)
        errors = [e for e in response.json()["detail"] if e["loc"] == ["path", "name"]]
        assert errors and problem in errors[0]["msg"], (method, path, response.text)
        checked += 1
    assert checked >= 6  # detail, history, deploy, rollback, delete, predict


@pytest.mark.parametrize(
    "name", ["iris", "iris-classifier_v2.1", "Iris Model", "modèle", "a..b", "x%y", ".hidden"]
)
def test_ordinary_model_names_pass(name: str) -> None:
    assert model_name_problem(name) is None


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "\ud800"])
def test_dot_names_slashes_and_lone_surrogates_are_refused(name: str) -> None:
    """Cases a URL cannot carry to the routes (dot segments are resolved by clients)."""
    assert model_name_problem(name) is not None


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_thousands_deep_is_400_on_every_json_endpoint(api: Api) -> None:
    deep = nested(100_000)  # past 16 KB: measured in a worker thread
    for path in ("/repos", "/models/m/deploy", "/models/m/rollback", "/models/m/predict"):
        response = api.client.post(path, content=deep, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        assert "JSON_MAX_DEPTH" in response.json()["detail"]
    as_object = '{"github_url": ' + nested(DEPTH_LIMIT - 1) + "}"
    assert api.client.post("/repos", content=as_object).status_code == 422  # deep enough: fine
    assert api.client.post("/repos", content=nested(DEPTH_LIMIT + 1)).status_code == 400


def test_a_deep_body_sent_in_pieces_is_400(api: Api) -> None:
    def pieces() -> Iterator[bytes]:  # chunked: no Content-Length, many receive() calls
        yield b'{"github_url": '
        for _ in range(20):
            yield b"[" * 10
        yield b"]" * 200 + b"}"

    response = api.client.post("/repos", content=pieces())
    assert response.status_code == 400, response.text


def test_deep_webhook_deliveries_are_400_as_json_and_as_form(api: Api) -> None:
    payload = push_payload("https://github.com/octo-org/iris")
    payload["commits"] = json.loads(nested(DEPTH_LIMIT + 1))
    sent = delivery(payload, "secret")
    response = api.deliver(sent)
    assert response.status_code == 400, response.text
    assert "JSON_MAX_DEPTH" in response.json()["detail"]

    form = urlencode({"payload": sent.body.decode()}).encode()
    headers = {**sent.headers, "Content-Type": "application/x-www-form-urlencoded"}
    response = api.client.post("/webhook/github", content=form, headers=headers)
    assert response.status_code == 400, response.text
    assert "JSON_MAX_DEPTH" in response.json()["detail"]


def test_json_max_depth_is_a_setting(make_api: Callable[..., Api]) -> None:
    api = make_api(json_max_depth=3)
    three = {"github_url": {"a": {"b": 1}}}
    assert api.client.post("/repos", json=three).status_code == 422
    four = {"github_url": {"a": {"b": {"c": 1}}}}
    response = api.client.post("/repos", json=four)
    assert response.status_code == 400
    assert "more than 3 levels" in response.json()["detail"]


def random_json(rng: random.Random, depth: int) -> Any:
    """A JSON value nested exactly `depth` deep, with strings full of brackets and escapes."""
    if depth == 0:
        return rng.choice(['"[{', '\\"]', "\\", "ok", 'a\\"[[', "ü[", 3.5, None, True])
    inner = random_json(rng, depth - 1)
    siblings = [random_json(rng, rng.randrange(depth)) for _ in range(rng.randrange(3))]
    if rng.random() < 0.5:
        return [*siblings, inner]
    return {f'k{i}"[': value for i, value in enumerate([*siblings, inner])}


def measure(text: bytes, limit: int, cuts: list[int]) -> bool:
    """Whether the gauge accepts `text` fed in pieces split at `cuts`."""
    gauge = JsonDepthGauge(limit)
    try:
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
            gauge.feed(text[start:end])
    except JsonTooDeep:
        return False
    return True


def test_depth_gauge_counts_structure_only_whatever_the_pieces() -> None:
    rng = random.Random(9)
    for _ in range(300):
        depth = rng.randrange(1, 12)
        text = json.dumps(random_json(rng, depth), ensure_ascii=rng.random() < 0.5).encode()
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randrange(6))))
        assert measure(text, depth, cuts), text
        assert not measure(text, depth - 1, cuts), text
        assert not measure(text, depth - 1, list(range(1, len(text)))), text  # byte by byte


def plain_json(rng: random.Random, depth: int) -> Any:
    """Like random_json, but written with no backslash (no quote or escape inside strings)."""
    if depth == 0:
        return rng.choice(["[{", "]}", "ok", "x[[", "ü{", 3.5, None, True])
    inner = plain_json(rng, depth - 1)
    siblings = [plain_json(rng, rng.randrange(depth)) for _ in range(rng.randrange(4))]
    if rng.random() < 0.5:
        return [*siblings, inner]
    return {f"k{i}[": value for i, value in enumerate([*siblings, inner])}


def gauge_state(text: bytes, limit: int, cuts: list[int]) -> tuple[bool, int, bool]:
    """Accepted, and the depth and string state the gauge ends in."""
    gauge = JsonDepthGauge(limit)
    try:
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
            gauge.feed(text[start:end])
    except JsonTooDeep:
        return False, -1, False
    return True, gauge.depth, gauge._in_string


def test_vectorized_depth_agrees_with_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces without backslashes are measured with numpy rather than scanned byte by byte
    (mlops_core/request_limits.py); both must judge every text alike, whatever the cuts."""
    rng = random.Random(11)
    for _ in range(150):
        depth = rng.randrange(1, 9)
        text = json.dumps(plain_json(rng, depth), ensure_ascii=False).encode()
        assert b"\\" not in text
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randrange(5))))
        judged = []
        for limit in (depth - 1, depth):
            monkeypatch.setattr(request_limits, "_VECTOR_BYTES", 1)
            vectorized = gauge_state(text, limit, cuts)
            monkeypatch.setattr(request_limits, "_VECTOR_BYTES", len(text) + 1)
            assert vectorized == gauge_state(text, limit, cuts), text
            judged.append(vectorized[0])
        assert judged == [False, True], text


@pytest.mark.parametrize(
    ("pieces", "accepted"),
    [
        ([b'["[[[[["]'], True),
        ([b'["a\\', b'"[[[["]'], True),  # the escaped quote keeps the string open
        ([b'["a\\\\', b'"', b",[[]]]"], False),  # an escaped backslash does not
        ([b'["a\\\\\\', b'"[[', b'"]'], True),
        ([b"[", b"[", b"]", b"]"], False),
        ([b"{}" * 10, b"[]"], True),
        ([b'["' + b'\\"' * 1000 + b'[[["]'], True),  # a long string of escaped quotes
        ([b'["' + b'\\"' * 500, b'\\"' * 500 + b'[["', b"]"], True),
        ([b'["' + b'\\"' * 500, b'\\"' * 500 + b'"[]]'], False),
    ],
)
def test_depth_gauge_follows_escapes_across_pieces(pieces: list[bytes], accepted: bool) -> None:
    gauge = JsonDepthGauge(1)
    try:
        for piece in pieces:
            gauge.feed(piece)
    except JsonTooDeep:
        assert not accepted
    else:
        assert accepted


def test_check_json_depth_takes_text() -> None:
    check_json_depth('{"a": "[[[["}', 1)
    with pytest.raises(JsonTooDeep, match="more than 1 levels"):
        check_json_depth('{"a": []}', 1)
