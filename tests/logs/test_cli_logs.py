"""`mlops logs`: the terminal viewer, run as the installed command against a real backend."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.logs.conftest import READ_TOKEN, Backend, PublishingWorker, expected_texts
from tests.support.processes import VENV_BIN


def _mlops(*args: str, api: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_BIN / "mlops"), *args, "--api", api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("outcome", "exit_code"), [("success", 0), ("failed", 1), ("cancelled", 2)]
)
def test_follow_prints_the_log_live_and_exits_with_the_pipeline_outcome(
    backend: Backend, outcome: str, exit_code: int
) -> None:
    pipeline_id = backend.new_pipeline()
    worker = PublishingWorker(
        backend.redis_url, pipeline_id, 80, interval=0.01, final_status=outcome
    )
    cli = _mlops("logs", str(pipeline_id), "--follow", api=backend.http_url)
    time.sleep(0.5)
    worker.start()
    stdout, stderr = cli.communicate(timeout=60)

    assert cli.returncode == exit_code, stderr
    lines = stdout.splitlines()
    assert lines[:-1] == expected_texts(80)
    assert lines[-1] == f"[mlops] pipeline {outcome}"


def test_without_follow_prints_the_stored_log_and_names_an_unknown_pipeline(
    backend: Backend,
) -> None:
    pipeline_id = backend.new_pipeline()
    PublishingWorker(backend.redis_url, pipeline_id, 1500, interval=0, final_status=None).run()

    cli = _mlops("logs", str(pipeline_id), api=backend.http_url)
    stdout, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 0, stderr
    assert stdout.splitlines() == expected_texts(1500)  # more than one REST page

    missing = _mlops("logs", str(pipeline_id + 1), "--follow", api=backend.http_url)
    _, stderr = missing.communicate(timeout=60)
    assert missing.returncode == 3
    assert f"pipeline {pipeline_id + 1} not found" in stderr


def test_the_token_goes_on_every_call_and_a_refusal_is_named(guarded_backend: Backend) -> None:
    """--token opens the read guard for the stored log (REST) and the live one (WebSocket)."""
    pipeline_id = guarded_backend.new_pipeline()
    PublishingWorker(guarded_backend.redis_url, pipeline_id, 20, interval=0).run()
    api = guarded_backend.http_url

    for live in ([], ["--follow"]):
        cli = _mlops("logs", str(pipeline_id), *live, "--token", READ_TOKEN, api=api)
        stdout, stderr = cli.communicate(timeout=60)
        assert cli.returncode == 0, stderr
        assert stdout.splitlines()[:-1] == expected_texts(20)

        # Refused at once, not retried for a minute: the same token would be refused again.
        started = time.monotonic()
        refused = _mlops("logs", str(pipeline_id), *live, "--token", "wrong", api=api)
        _, stderr = refused.communicate(timeout=60)
        assert refused.returncode == 4, stderr
        assert "invalid read token" in stderr
        assert "--token" in stderr
        assert time.monotonic() - started < 30
