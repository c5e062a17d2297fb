"""Cron schedules: the firing rules with an injected clock, and two real backends (in-process
apps with their periodic loops, one database, one Redis) firing a due slot exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backend.pipeline_queue import PipelineQueue
from backend.schedule_runner import ScheduleRunner
from backend.schedules import describe, plan, validate_schedule
from mlops_core.database import session_scope
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import Notebook, Pipeline
from tests.api.conftest import NOTEBOOK, Api, github_url
from tests.support.processes import wait_for

NOW = datetime(2026, 12, 1, 10, 7, 30, tzinfo=UTC)


def at(hour: int, minute: int, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def test_a_new_schedule_waits_for_its_first_slot() -> None:
    firing = plan("* * * * *", None, NOW)
    assert (firing.slot, firing.next_at) == (None, at(10, 8))


def test_a_slot_still_to_come_fires_nothing() -> None:
    firing = plan("0 3 * * *", at(3, 0, day=2), NOW)
    assert (firing.slot, firing.next_at) == (None, at(3, 0, day=2))


@pytest.mark.parametrize(
    ("now", "slot", "next_at"),
    [(NOW, at(10, 7), at(10, 8)), (at(10, 7), at(10, 7), at(10, 8))],
)
def test_the_slot_that_came_fires_and_the_next_one_is_after_now(
    now: datetime, slot: datetime, next_at: datetime
) -> None:
    firing = plan("* * * * *", at(10, 7), now)
    assert (firing.slot, firing.next_at, firing.missed) == (slot, next_at, 0)


def test_after_downtime_one_run_catches_up_for_the_latest_slot_and_counts_the_missed() -> None:
    """Backends down from 08:00 to 10:07:30 with a 5-minute schedule: one run, for 10:05."""
    firing = plan("*/5 * * * *", at(8, 0), NOW)
    assert (firing.slot, firing.next_at, firing.missed) == (at(10, 5), at(10, 10), 25)
    assert describe(firing, "*/5 * * * *") == (
        "*/5 * * * * (UTC): slot 2026-12-01 10:05; 25 earlier slots passed while no backend ran"
    )


def test_schedules_are_normalised_and_bad_ones_named() -> None:
    assert validate_schedule(" 0  3 * * 1-5 ") == "0 3 * * 1-5"
    assert validate_schedule("@daily") == "@daily"
    for bad, message in [
        ("* * * *", "is not a cron expression: give 5 fields"),
        ("* * * * * *", "is not a cron expression"),
        ("61 * * * *", "is not a valid cron expression"),
        ("@often", "is not a cron expression"),
        ("0 0 31 2 *", "never fires"),
        (" ", "must not be empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            validate_schedule(bad)


def test_a_bad_schedule_is_422_naming_the_field(api: Api) -> None:
    response = api.client.post("/repos", json={"github_url": github_url(), "schedule": "daily"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "schedule"]
    assert "'daily' is not a cron expression" in error["msg"]


def move_slot_back(database_url: str, repo_id: int, minutes: int) -> datetime:
    """As if the backends had been down: the notebook's next slot passed `minutes` ago."""
    with session_scope(database_url) as session:
        notebook = session.scalars(select(Notebook).where(Notebook.repo_id == repo_id)).one()
        now = db_now(session).replace(tzinfo=UTC)
        notebook.schedule_next_at = now.replace(second=0, microsecond=0) - timedelta(
            minutes=minutes
        )
        return now


def scheduled(database_url: str) -> list[Pipeline]:
    with session_scope(database_url) as session:
        return list(session.scalars(select(Pipeline).where(Pipeline.trigger == "schedule")))


def test_two_backends_fire_a_due_slot_once_and_the_pipeline_says_schedule(
    make_api: Callable[..., Api],
) -> None:
    first = make_api(schedule_interval_seconds=0.2)
    second = make_api(schedule_interval_seconds=0.2)
    repo = first.register(github_url(), schedule="* * * * *")
    assert repo["schedule"] == "* * * * *"
    assert repo["notebooks"][0]["schedule"] == "* * * * *"
    upcoming = datetime.fromisoformat(repo["next_run_at"])
    assert timedelta(0) < upcoming - datetime.now(UTC) <= timedelta(seconds=61)
    assert scheduled(first.database_url) == []  # setting a schedule fires nothing at once

    now = move_slot_back(first.database_url, repo["id"], minutes=3)
    [fired] = wait_for(lambda: scheduled(first.database_url), 20, 0.1, "the scheduled run")
    time.sleep(1.0)  # five more passes of each backend: still one run for that slot
    assert [p.id for p in scheduled(first.database_url)] == [fired.id]

    shown = second.client.get(f"/pipelines/{fired.id}").json()
    assert shown["trigger"] == "schedule"
    assert shown["notebook_path"] == NOTEBOOK
    assert shown["commit_sha"] is None  # the worker runs the branch head
    assert shown["trigger_detail"].startswith("* * * * * (UTC): slot ")
    assert "3 earlier slots passed while no backend ran" in shown["trigger_detail"]
    after = second.client.get(f"/repos/{repo['id']}").json()
    assert datetime.fromisoformat(after["next_run_at"]) > now


def test_a_slot_fires_once_when_two_backends_race_for_it(make_api: Callable[..., Api]) -> None:
    """Even without the lease (a holder that stalled past it while another took over), the
    conditional UPDATE lets one transaction fire the slot."""
    api = make_api()
    repo = api.register(github_url(), schedule="*/5 * * * *")
    move_slot_back(api.database_url, repo["id"], minutes=6)
    queues = [PipelineQueue(api.settings) for _ in range(2)]
    runners = [ScheduleRunner(api.settings, queue) for queue in queues]
    start = threading.Barrier(len(runners))
    fired: list[list[int]] = []

    def race(runner: ScheduleRunner) -> None:
        start.wait()
        fired.append(runner.fire_due())

    threads = [threading.Thread(target=race, args=(runner,)) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for queue in queues:
        queue.close()
    assert sorted(len(ids) for ids in fired) == [0, 1]
    assert len(scheduled(api.database_url)) == 1


def test_patch_sets_and_removes_a_schedule(api: Api) -> None:
    repo = api.register(github_url())
    assert repo["schedule"] is None and repo["next_run_at"] is None
    changed = api.client.patch(f"/repos/{repo['id']}", json={"schedule": "0 3 * * *"}).json()
    assert changed["schedule"] == "0 3 * * *"
    assert datetime.fromisoformat(changed["next_run_at"]).strftime("%H:%M") == "03:00"
    assert changed["watch_paths"] == repo["watch_paths"]  # not given: unchanged
    removed = api.client.patch(f"/repos/{repo['id']}", json={"schedule": None}).json()
    assert (removed["schedule"], removed["next_run_at"]) == (None, None)
    empty = api.client.patch(f"/repos/{repo['id']}", json={})
    assert empty.status_code == 422
    assert "give watch_paths and/or schedule" in empty.json()["detail"][0]["msg"]
