"""Hot swap under load: thousands of predictions across three swaps, none failed, none mixed."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
from mlflow import MlflowClient
from sklearn.dummy import DummyRegressor

from mlops_core.model_registry import set_served_version
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import wait_for

CLIENT_THREADS = 4
REQUESTS_BETWEEN_SWAPS = 700
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


class Load:
    """Client threads posting predictions until stopped; every answer is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: list[list[tuple[int, str | None, list[float] | None]]] = [
            [] for _ in range(CLIENT_THREADS)
        ]
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(CLIENT_THREADS)
        ]

    def _run(self, index: int) -> None:
        out = self.answers[index]
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(self.url, json={"data": ROWS})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if response.status_code != 200:
                    out.append((response.status_code, None, None))
                    continue
                body = response.json()
                out.append((200, body["model_version"], body["predictions"]))

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def seen(self, version: str) -> bool:
        return any(a and a[-1][1] == version for a in self.answers)


def test_no_request_fails_or_mixes_versions_across_three_swaps(
    registry: MlflowClient,
    serving_alias: str,
    start_server: Callable[..., ModelServer],
    move_alias: Callable[[str, str], None],
) -> None:
    x, y = iris_like()
    name = unique("hot-swap")
    for value in (1, 2, 3, 4):
        model = DummyRegressor(strategy="constant", constant=float(value)).fit(x, y)
        assert register_version(model, x, name) == str(value)
    set_served_version(registry, name, "1", serving_alias)
    server = start_server("hot-swap", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    server.wait_serving(name, "1")

    load = Load(f"{server.url}/predict/{name}")
    for thread in load.threads:
        thread.start()
    try:
        for version in ("2", "3", "4"):
            target = load.count() + REQUESTS_BETWEEN_SWAPS
            wait_for(lambda t=target: load.count() >= t, 120, 0.05, f"{target} answers")
            move_alias(name, version)
            wait_for(lambda v=version: load.seen(v), 60, 0.05, f"answers from version {version}")
        target = load.count() + REQUESTS_BETWEEN_SWAPS
        wait_for(lambda: load.count() >= target, 120, 0.05, "answers after the last swap")
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(30)

    assert load.errors == []
    answers = [a for per_thread in load.answers for a in per_thread]
    assert len(answers) >= 4 * REQUESTS_BETWEEN_SWAPS
    assert [a for a in answers if a[0] != 200] == []
    # Each response names one version and every row of it was predicted by that version.
    for _, version, predictions in answers:
        assert predictions == [float(version)] * len(ROWS), (version, predictions)
    assert {a[1] for a in answers} == {"1", "2", "3", "4"}
    # A client never goes back to an older version once it has seen a newer one.
    for per_thread in load.answers:
        versions = [int(a[1]) for a in per_thread]
        assert versions == sorted(versions)
    assert server.models()[name]["version"] == "4"


def test_a_rollback_to_the_version_just_swapped_out_swaps_back_without_loading(
    registry: MlflowClient,
    start_server: Callable[..., ModelServer],
    move_alias: Callable[[str, str], None],
) -> None:
    """The champion a deploy swaps out stays loaded for MODEL_STANDBY_SECONDS: rolling back to
    it is a swap, not a load (its loaded_at is the first load's); with 0 it is loaded again."""
    x, y = iris_like()
    name = unique("standby")
    v1 = register_version(DummyRegressor(strategy="constant", constant=1.0).fit(x, y), x, name)
    v2 = register_version(DummyRegressor(strategy="constant", constant=2.0).fit(x, y), x, name)
    move_alias(name, v1)
    kept = start_server("replica-standby")
    dropped = start_server("replica-no-standby", MODEL_STANDBY_SECONDS="0")
    first = {s.replica: s.models()[name]["loaded_at"] for s in (kept, dropped)}

    move_alias(name, v2)
    for server in (kept, dropped):
        server.wait_serving(name, v2)
    move_alias(name, v1)
    for server in (kept, dropped):
        server.wait_serving(name, v1)
        answer = httpx.post(f"{server.url}/predict/{name}", json={"data": [x[0].tolist()]})
        assert answer.json()["predictions"] == [1.0]
    assert kept.models()[name]["loaded_at"] == first[kept.replica]
    assert dropped.models()[name]["loaded_at"] != first[dropped.replica]
