"""`mlops repos`, `mlops pipelines`, `mlops trigger` and `mlops config` against a real backend.

No worker takes the pipelines: they stay queued until the CLI cancels them, which is what
cancel and retry need. The CLI runs in this process (`main`), as the installed command does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_cli.config import resolve
from mlops_cli.main import main as cli_main
from mlops_core.stack_state import StackState, write_state
from tests.api.conftest import LiveBackend, dead_url, github_url
from tests.conftest import SQLITE_ONLY

ADMIN_TOKEN = "cli-pipelines-admin-token"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def backend(
    start_backend: Callable[..., LiveBackend],
    any_database_url: str,
    queue_redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> LiveBackend:
    """A backend the CLI finds through its config file alone (no flag, no variable)."""
    live = start_backend(
        DATABASE_URL=any_database_url, REDIS_URL=queue_redis_url, API_TOKEN=ADMIN_TOKEN
    )
    config = tmp_path / "mlops" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'api_url = "{live.url}"\ntoken = "{ADMIN_TOKEN}"\n')
    config.chmod(0o600)
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    monkeypatch.delenv("MLOPS_API_URL", raising=False)
    monkeypatch.delenv("API_TOKEN", raising=False)
    return live


@SQLITE_ONLY
def test_repos_and_pipelines_from_the_cli(
    backend: LiveBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    url = github_url()
    code, out, _ = run(
        capsys, "repos", "add", url, "--notebook", "nb/train.ipynb", "--notebook", "nb/b.ipynb",
        "--watch", "nb/**", "--schedule", "0 3 1 1 *", "--no-webhook", "--json",
    )  # fmt: skip
    assert code == 0
    repo = json.loads(out)
    assert (repo["github_url"], repo["notebook_path"]) == (url, "nb/train.ipynb")
    assert [(n["notebook_path"], n["schedule"]) for n in repo["notebooks"]] == [
        ("nb/train.ipynb", "0 3 1 1 *"),
        ("nb/b.ipynb", "0 3 1 1 *"),
    ]
    repo_id = str(repo["id"])
    code, _, err = run(capsys, "repos", "add", url, "--no-webhook")
    assert code == 4 and f"{url} is already registered as repo {repo_id}" in err

    code, out, _ = run(capsys, "repos", "list")
    assert code == 0 and out.splitlines()[0].split() == [
        "ID", "URL", "BRANCH", "NOTEBOOK", "LAST", "PIPELINE",
    ]  # fmt: skip
    assert [repo_id, url, "main", "nb/train.ipynb", "-"] in [
        line.split() for line in out.splitlines()
    ]
    code, out, _ = run(capsys, "repos", "show", repo_id)
    assert code == 0 and "watches:    nb/train.ipynb, nb/**" in out.splitlines()
    assert f"schedule:   0 3 1 1 * UTC, next run {repo['next_run_at']}" in out.splitlines()
    code, out, _ = run(capsys, "repos", "schedule", repo_id, "--off")
    assert code == 0 and out == f"repo {repo_id} nb/train.ipynb: no scheduled runs\n"
    code, out, _ = run(capsys, "repos", "show", repo_id, "--json")
    assert [n["schedule"] for n in json.loads(out)["notebooks"]] == [None, "0 3 1 1 *"]
    code, _, err = run(capsys, "repos", "schedule", repo_id, "0 3 * *")
    assert code == 4 and "'0 3 * *' is not a cron expression" in err
    code, _, err = run(capsys, "repos", "schedule", repo_id)
    assert code == 64 and "or --off" in err

    # -p NAME VALUE and --param NAME=VALUE both reach the pipeline, values read as JSON.
    code, out, _ = run(
        capsys, "trigger", repo_id, "-p", "N_ESTIMATORS", "300", "--param", "KERNEL=rbf"
    )
    assert code == 0 and out.startswith("pipeline ") and out.rstrip().endswith(" queued")
    pipeline_id = out.split()[1]
    code, out, _ = run(capsys, "pipelines", "--status", "queued")  # the argparse CLI's spelling
    assert code == 0 and out.splitlines()[1].split()[:2] == [pipeline_id, "queued"]
    code, out, _ = run(capsys, "pipelines", "list", "--repo-id", repo_id, "--json")
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["parameters"] == {"N_ESTIMATORS": 300, "KERNEL": "rbf"}
    code, out, _ = run(capsys, "pipelines", "show", pipeline_id)
    assert code == 0
    assert "parameters: KERNEL='rbf', N_ESTIMATORS=300" in out.splitlines()
    assert ["fetch", "pending", "-", "-"] in [line.split() for line in out.splitlines()]

    code, _, err = run(capsys, "pipelines", "retry", pipeline_id)
    assert code == 4 and "only a finished pipeline can be retried" in err
    code, out, _ = run(capsys, "pipelines", "cancel", pipeline_id)
    assert code == 0 and out == f"pipeline {pipeline_id} cancelled\n"
    code, _, err = run(capsys, "pipelines", "cancel", pipeline_id)
    assert code == 4 and "has already finished (cancelled)" in err
    code, out, _ = run(capsys, "pipelines", "retry", pipeline_id, "--json")
    retry_id = str(json.loads(out)["pipeline_id"])
    code, out, _ = run(capsys, "pipelines", "show", retry_id, "--json")
    retried = json.loads(out)
    assert (retried["trigger"], retried["parameters"]) == ("retry", listed["parameters"])
    # --notebook runs another of the repo's notebooks; one it does not have is refused.
    code, out, _ = run(capsys, "trigger", repo_id, "--notebook", "nb/b.ipynb", "--json")
    other = json.loads(out)["pipeline_id"]
    code, out, _ = run(capsys, "pipelines", "show", str(other), "--json")
    assert code == 0 and json.loads(out)["notebook_path"] == "nb/b.ipynb"
    assert run(capsys, "pipelines", "cancel", str(other))[0] == 0
    code, _, err = run(capsys, "trigger", repo_id, "--notebook", "nb/none.ipynb")
    assert code == 4 and "nb/none.ipynb is not a notebook of repo" in err
    code, _, err = run(capsys, "pipelines", "show", "987654321")
    assert code == 3 and "pipeline 987654321 not found" in err

    # Removing asks first; without a terminal, --yes says so.
    code, _, err = run(capsys, "repos", "remove", repo_id)
    assert code == 64 and "Pass --yes" in err
    code, out, _ = run(capsys, "repos", "remove", repo_id, "--yes")
    assert code == 0 and out == f"repo {repo_id} removed\n"
    code, _, err = run(capsys, "repos", "show", repo_id)
    assert code == 3 and f"repo {repo_id} not found" in err


@SQLITE_ONLY
def test_where_the_cli_finds_the_backend_and_how_it_names_a_fix(
    backend: LiveBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    code, out, _ = run(capsys, "config", "--json")
    config = Path(json.loads(out)["config_file"])
    assert code == 0 and json.loads(out) == {
        "api_url": backend.url,
        "api_url_from": str(config),
        "token": "set",
        "token_from": str(config),
        "config_file": str(config),
        "config_file_exists": True,
    }
    assert ADMIN_TOKEN not in out

    # A flag beats the environment, which beats the file.
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    code, _, err = run(capsys, "trigger", "987654321")  # a change: the admin token's
    assert code == 4 and "401" in err and "--token" in err and "$API_TOKEN" in err
    code, _, err = run(capsys, "trigger", "987654321", "--token", ADMIN_TOKEN)
    assert code == 3 and "repo 987654321 not found" in err
    monkeypatch.setenv("MLOPS_API_URL", dead_url())
    code, _, err = run(capsys, "--token", ADMIN_TOKEN, "repos", "list")
    assert code == 4 and "Connection refused" in err
    assert "is the backend running? Start the local stack with `make up`" in err
    assert run(capsys, "repos", "list", "--api", backend.url, "--token", ADMIN_TOKEN)[0] == 0

    # A token in a file other users can read is refused, naming the fix.
    monkeypatch.delenv("API_TOKEN")
    config.chmod(0o644)
    code, _, err = run(capsys, "repos", "list")
    assert code == 64 and f"chmod 600 {config}" in err
    broken = tmp_path / "broken.toml"
    broken.write_text('api_url = "http://x"\ntokn = "typo"\n')
    monkeypatch.setenv("MLOPS_CONFIG", str(broken))
    code, _, err = run(capsys, "repos", "list")
    assert code == 64 and "unknown key(s) tokn" in err


def test_without_a_url_the_cli_finds_the_local_stack_where_it_was_started(tmp_path: Path) -> None:
    """`make demo` may move the backend off a taken 8000; the CLI follows it there."""
    home = tmp_path / "home"
    env = {"MLOPS_HOME": str(home), "MLOPS_CONFIG": str(tmp_path / "none.toml")}
    assert resolve(None, None, env).api_url == "http://127.0.0.1:8000"
    write_state(home, StackState(ports={"backend": 18123}))
    found = resolve(None, None, env)
    assert (found.api_url, found.api_url_source) == (
        "http://127.0.0.1:18123",
        f"the local stack in {home}",
    )
    assert resolve(None, None, {**env, "MLOPS_API_URL": "http://x:1"}).api_url == "http://x:1"
