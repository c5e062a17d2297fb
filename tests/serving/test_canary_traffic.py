"""Canary and shadow traffic through the backend to two model-server replicas.

One stack for the module: a Redis of its own (the backend stores the prediction log from it,
no other test's backend reads it), two model-server replicas and a backend process forwarding
to both. The model's versions are constant classifiers ("A", "B", "C"), so every answer shows
which version gave it. The promotion policy never decides here (CANARY_MIN_REQUESTS is out of
reach): these canaries end by hand; tests/serving/test_canary_policy.py lets the policy decide.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier

from mlops_cli.main import main as cli_main
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command
from mlops_core.model_registry import served_version, set_served_version
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.serving.conftest import REPO_ROOT, ModelServer, iris_like, register_version, unique
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import RedisServer

TOKEN = "canary-traffic-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = [5.1, 3.5, 1.4, 0.2]
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
LABELS = {"1": "A", "2": "B", "3": "C"}


def constant_classifier(label: str) -> DummyClassifier:
    x, _ = iris_like()
    return DummyClassifier(strategy="constant", constant=label).fit(x, [label] * len(x))


@dataclass
class Stack:
    name: str
    backend: str
    process: ManagedProcess
    replicas: list[ModelServer]
    alias: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.backend, headers=AUTH, timeout=30)


@pytest.fixture(scope="module")
def stack(
    registry: MlflowClient,
    serving_alias: str,
    server_env: dict[str, str],
    start_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("canary-traffic")
    (tmp / "redis").mkdir()
    own_redis = RedisServer(tmp / "redis")
    own_redis.start()
    name = unique("canary")
    x, _ = iris_like()
    for label in LABELS.values():
        register_version(constant_classifier(label), x, name)
    set_served_version(registry, name, "1", serving_alias)
    replicas = [
        start_server(f"canary-{side}", wait=False, REDIS_URL=own_redis.model_server_url)
        for side in "ab"
    ]
    port = free_port()
    backend = ManagedProcess(
        uvicorn_command(BACKEND_APP, port, log_level="warning"),
        env={
            **server_env,
            "REDIS_URL": own_redis.url,
            "MLOPS_HOME": str(tmp / "home"),
            "DATABASE_URL": f"sqlite:///{tmp / 'backend.db'}",
            "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "MODEL_SERVER_URL": ",".join(replica.url for replica in replicas),
            "API_TOKEN": TOKEN,
            "CANARY_MIN_REQUESTS": "1000000000",
        },
        log_path=tmp / "backend.log",
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 60, backend)
        for replica in replicas:
            assert replica.process is not None
            wait_http(f"{replica.url}/ready", 90, replica.process)
            replica.wait_serving(name, "1")
        yield Stack(name, url, backend, replicas, serving_alias)
    finally:
        backend.stop()
        for replica in replicas:
            replica.stop()
        own_redis.stop()


def start(stack: Stack, **body: Any) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.post(f"/models/{stack.name}/canary", json=body)
    assert answer.status_code == 200, answer.text
    status = answer.json()
    assert status["active"] and status["challenger"] == str(body["version"])
    return status


def wait_challenger(stack: Stack, version: str | None) -> None:
    """Until both replicas run `version` as the challenger (None: none)."""
    for replica in stack.replicas:
        wait_for(
            lambda r=replica: (r.models()[stack.name].get("challenger") or {}).get("version")
            == version,
            30,
            0.1,
            f"{replica.replica} running challenger {version}",
        )


def history(stack: Stack) -> list[dict[str, Any]]:
    with stack.api() as api:
        return api.get(f"/models/{stack.name}/history").json()


async def predict_many(
    url: str, name: str, count: int, *, headers: dict[str, str] | None = None, clients: int = 8
) -> list[httpx.Response]:
    """`count` predictions through the backend, `clients` at a time."""
    answers: list[httpx.Response] = []
    todo = iter(range(count))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def run() -> None:
            for _ in todo:
                answers.append(
                    await client.post(
                        f"/models/{name}/predict", json={"data": [ROW]}, headers=headers
                    )
                )

        await asyncio.gather(*(run() for _ in range(clients)))
    return answers


def test_a_challenger_answers_its_weight_of_requests_and_a_sticky_user_one_version(
    stack: Stack,
) -> None:
    status = start(stack, version="2", weight=20)
    assert (status["champion"], status["mode"], status["weight"]) == ("1", "split", 20)
    wait_challenger(stack, "2")

    answers = asyncio.run(predict_many(stack.backend, stack.name, 2000))
    assert {a.status_code for a in answers} == {200}
    versions = Counter(a.json()["model_version"] for a in answers)
    assert set(versions) == {"1", "2"}
    share = versions["2"] / len(answers) * 100
    assert abs(share - 20) <= 3, versions
    # Each answer comes from the version it names.
    assert all(a.json()["predictions"] == [LABELS[a.json()["model_version"]]] for a in answers)
    # Both replicas answered both versions: the split is each replica's own, the same rule.
    for replica in stack.replicas:
        row = replica.models()[stack.name]
        assert row["requests"] > 0 and row["challenger"]["requests"] > 0

    # A sticky key: each user sees one version, whichever replica answers, on every protocol.
    start(stack, version="2", weight=50, sticky_key="header:X-User-Id")
    wait_for(
        lambda: all(
            r.models()[stack.name]["challenger"]["sticky_key"] == "header:X-User-Id"
            for r in stack.replicas
        ),
        30,
        0.1,
        "both replicas using the sticky key",
    )
    seen: dict[str, set[str]] = {}
    with httpx.Client(timeout=30) as client:
        for user in (f"user-{i}" for i in range(40)):
            for replica in stack.replicas:
                for path, body in (
                    (f"/predict/{stack.name}", {"data": [ROW]}),
                    (f"/v2/models/{stack.name}/infer", V2_BODY),
                ):
                    answer = client.post(replica.url + path, json=body, headers={"X-User-Id": user})
                    assert answer.status_code == 200, answer.text
                    seen.setdefault(user, set()).add(answer.json()["model_version"])
            through_backend = client.post(
                f"{stack.backend}/models/{stack.name}/predict",
                json={"data": [ROW]},
                headers={"X-User-Id": user},
            )
            seen[user].add(through_backend.json()["model_version"])
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {v for versions in seen.values() for v in versions} == {"1", "2"}

    with stack.api() as api:
        ended = api.post(f"/models/{stack.name}/canary/abort")
    assert ended.status_code == 200, ended.text
    assert ended.json()["served_version"] == "1"
    wait_challenger(stack, None)


def test_shadow_answers_from_the_champion_and_logs_the_challengers_answer(
    stack: Stack,
) -> None:
    start(stack, version="3", weight=100, mode="shadow")
    wait_challenger(stack, "3")
    ids = [f"shadow-{uuid.uuid4().hex[:8]}-{i}" for i in range(60)]
    with httpx.Client(base_url=stack.backend, timeout=30) as client:
        for request_id in ids:
            answer = client.post(
                f"/models/{stack.name}/predict",
                json={"data": [ROW]},
                headers={"X-Request-ID": request_id},
            )
            assert answer.status_code == 200, answer.text
            assert (answer.json()["model_version"], answer.json()["predictions"]) == ("1", ["A"])
            assert answer.headers["X-Request-ID"] == request_id

    def logged() -> dict[str, dict[bool, dict[str, Any]]] | None:
        with stack.api() as api:
            items = api.get(f"/models/{stack.name}/predictions", params={"size": 500}).json()
        rows: dict[str, dict[bool, dict[str, Any]]] = {}
        for item in items["items"]:
            rows.setdefault(item["request_id"], {})[item["shadow"]] = item
        return rows if all(len(rows.get(i, {})) == 2 for i in ids) else None

    rows = wait_for(logged, 30, 0.5, "every request logged with the champion's and the shadow's")
    for request_id in ids:
        answered, copied = rows[request_id][False], rows[request_id][True]
        assert (answered["version"], answered["predictions"]) == ("1", ["A"])
        assert (copied["version"], copied["predictions"]) == ("3", ["C"])
        assert copied["inputs"] == answered["inputs"]

    with stack.api() as api:
        status = api.get(f"/models/{stack.name}/canary").json()
    assert status["mode"] == "shadow"
    assert status["compared"] >= len(ids) and status["agreement"] == 0.0
    figures = {v["role"]: v for v in status["versions"]}
    assert figures["challenger"]["requests"] >= len(ids)  # its shadow answers
    assert figures["champion"]["requests"] >= len(ids)
    with stack.api() as api:
        traffic = api.get(f"/models/{stack.name}/traffic").json()
    assert "3" not in traffic["versions"]  # the shadow answered no caller
    with stack.api() as api:
        assert api.post(f"/models/{stack.name}/canary/abort").status_code == 200
    wait_challenger(stack, None)


async def load_during(stack: Stack, action: Any, *, clients: int = 4) -> Counter[str]:
    """Predict steadily through the backend while `action` runs (in a thread), and 1.5 s on."""
    outcomes: Counter[str] = Counter()
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=stack.backend, timeout=60) as client:

        async def loop() -> None:
            while not done.is_set():
                try:
                    answer = await client.post(
                        f"/models/{stack.name}/predict", json={"data": [ROW]}
                    )
                    body = answer.json()
                    ok = answer.status_code == 200 and body["predictions"] == [
                        LABELS[body["model_version"]]
                    ]
                    outcomes[f"ok v{body['model_version']}" if ok else answer.text[:200]] += 1
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    outcomes[f"{type(exc).__name__}: {exc}"] += 1
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(loop()) for _ in range(clients)]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(action)
        await asyncio.sleep(1.5)
        done.set()
        await asyncio.gather(*tasks)
    return outcomes


def test_promote_and_abort_under_load_fail_no_request(stack: Stack, registry: MlflowClient) -> None:
    start(stack, version="2", weight=50)
    wait_challenger(stack, "2")

    def promote() -> None:
        with stack.api() as api:
            answer = api.post(f"/models/{stack.name}/canary/promote")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["served_version"], answer.json()["previous_version"]) == ("2", "1")

    outcomes = asyncio.run(load_during(stack, promote))
    assert set(outcomes) <= {"ok v1", "ok v2"}, outcomes
    assert outcomes["ok v2"] > 0
    assert served_version(registry, stack.name, stack.alias) == "2"
    for replica in stack.replicas:
        replica.wait_serving(stack.name, "2")
    wait_challenger(stack, None)

    start(stack, version="3", weight=50)
    wait_challenger(stack, "3")

    def abort() -> None:
        with stack.api() as api:
            answer = api.post(f"/models/{stack.name}/canary/abort")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["served_version"], answer.json()["challenger"]) == ("2", "3")

    outcomes = asyncio.run(load_during(stack, abort))
    assert set(outcomes) <= {"ok v2", "ok v3"}, outcomes
    wait_challenger(stack, None)
    after = asyncio.run(predict_many(stack.backend, stack.name, 40))
    assert {a.json()["model_version"] for a in after} == {"2"}

    rows = history(stack)
    actions = [(row["action"], row["version"], row["previous_version"]) for row in rows[:4]]
    assert actions == [
        ("abort", "3", "2"),
        ("canary", "3", "2"),
        ("promote", "2", "1"),
        ("canary", "2", "1"),
    ]
    assert rows[3]["evidence"] == {"weight": 50.0, "mode": "split", "sticky_key": None}
    promoted = rows[2]["evidence"]
    assert promoted["challenger"]["version"] == "2" and promoted["challenger"]["requests"] > 0
    assert {check["name"] for check in promoted["checks"]} >= {"error_rate", "live_quality"}
    assert rows[2]["reason"].startswith("promoted by api (the policy would wait")
    # A rollback goes back to what served before the promotion, not to the aborted challenger.
    with stack.api() as api:
        back = api.post(f"/models/{stack.name}/rollback")
    assert back.json()["served_version"] == "1", back.text
    for replica in stack.replicas:
        replica.wait_serving(stack.name, "1")


def test_bad_canary_requests_are_refused_naming_the_problem(stack: Stack) -> None:
    with stack.api() as api:
        cases = [
            ({"version": "1"}, 409, "is the served version"),
            ({"version": "99"}, 404, "has no version 99"),
            ({"version": "2", "weight": 0}, 422, "weight"),
            ({"version": "2", "weight": 101}, 422, "weight"),
            ({"version": "2", "mode": "mirror"}, 422, "mode"),
            ({"version": "2", "sticky_key": "cookie:id"}, 422, "must be 'header:<Header-Name>'"),
        ]
        for body, status, fragment in cases:
            answer = api.post(f"/models/{stack.name}/canary", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert fragment in answer.text, (body, answer.text)
        nothing = api.post(f"/models/{stack.name}/canary/promote")
        assert nothing.status_code == 409 and "has no challenger running" in nothing.text
        assert api.get(f"/models/{stack.name}/canary").json()["active"] is False
        unknown = api.get("/models/no-such-model-here/canary")
        assert unknown.status_code == 404
        anonymous = httpx.post(f"{stack.backend}/models/{stack.name}/canary", json={"version": "2"})
        assert anonymous.status_code == 401


def test_the_cli_starts_shows_and_ends_canaries(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_API_URL", stack.backend)
    monkeypatch.setenv("API_TOKEN", TOKEN)

    def mlops(*args: str) -> tuple[int, str, str]:
        code = cli_main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = mlops(
        "models", "canary", stack.name, "--version", "3", "--weight", "10", "--shadow"
    )
    assert code == 0, out
    assert (
        "challenger: version 3 gets a copy of 10% of requests beside version 1 (shadow)"
    ) in out.splitlines()
    assert out.splitlines()[3].startswith("policy:     wait: ")
    assert "agreement" in out
    code, out, _ = mlops("models", "canary", stack.name, "--json")
    shown = json.loads(out)
    assert (shown["challenger"], shown["mode"], shown["weight"]) == ("3", "shadow", 10.0)
    code, out, _ = mlops("models", "abort", stack.name)
    assert (code, out) == (
        0,
        f"{stack.name}: canary of version 3 aborted; version 1 answers every request\n",
    )

    code, out, _ = mlops(
        "models", "canary", stack.name, "--version", "2", "--weight", "25",
        "--sticky-key", "field:user_id",
    )  # fmt: skip
    assert code == 0 and "(split, one version per field:user_id)" in out
    code, out, _ = mlops("models", "promote", stack.name)
    assert (code, out) == (0, f"{stack.name}: version 2 is served (was 1)\n")
    code, out, _ = mlops("models", "canary", stack.name)
    assert (code, out) == (0, f"{stack.name}: no challenger runs beside version 2\n")
    code, _, err = mlops("models", "promote", stack.name)
    assert code == 4 and "has no challenger running" in err
    code, _, err = mlops("models", "canary", stack.name, "--weight", "5")
    assert code == 64 and "--weight, --shadow and --sticky-key go with --version" in err
