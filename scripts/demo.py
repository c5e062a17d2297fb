"""`make demo`: the platform's main job end to end on this machine, with real parts only.

Starts the local stack, makes a local git repository (a bare "remote" standing in for GitHub and
a working clone) holding the iris example notebook, registers it, pushes, delivers the push
webhook exactly as GitHub would, follows the pipeline's log, predicts; then a second commit
changes a hyperparameter (version 2, hot-swapped) and a rollback serves version 1 again.
Exits non-zero naming the step that failed. The stack stays up afterwards (`make down`).
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from local_stack.commands import StackError, describe, up
from local_stack.plan import REPO_ROOT, VENV_BIN
from mlops_cli.github_delivery import ZERO_SHA, build_delivery, push_payload

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
PIPELINE_TIMEOUT_SECONDS = 900
SWAP_TIMEOUT_SECONDS = 60


class DemoFailure(RuntimeError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


_current_step = ""


@contextmanager
def step(name: str) -> Iterator[None]:
    """Announce a step; any error inside it becomes a DemoFailure naming the step."""
    global _current_step
    _current_step = name
    print(f"\n==> {name}", flush=True)
    try:
        yield
    except DemoFailure:
        raise
    except (StackError, httpx.HTTPError, subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise DemoFailure(name, str(detail).strip()) from exc


class Api:
    """The backend's REST API; an unexpected status fails the current step with the answer."""

    def __init__(self, base_url: str) -> None:
        headers = (
            {"Authorization": f"Bearer {os.environ['API_TOKEN']}"}
            if os.environ.get("API_TOKEN")
            else {}
        )
        self.http = httpx.Client(base_url=base_url, timeout=60, trust_env=False, headers=headers)

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            hint = ""
            if response.status_code in (404, 405) and "detail" in response.text[:40]:
                hint = " (is this route built yet? see the open issues)"
            raise DemoFailure(
                _current_step,
                f"{method} {path} answered {response.status_code}, expected {expect}: "
                f"{response.text[:600]}{hint}",
            )
        return response.json() if response.content else None


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Demo Scientist",
        "GIT_AUTHOR_EMAIL": "demo@example.com",
        "GIT_COMMITTER_NAME": "Demo Scientist",
        "GIT_COMMITTER_EMAIL": "demo@example.com",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def find_iris_notebook() -> Path:
    found = sorted((REPO_ROOT / "notebooks").rglob("*iris*.ipynb"))
    found = [p for p in found if ".ipynb_checkpoints" not in p.parts]
    if not found:
        raise DemoFailure(
            _current_step, "no iris notebook under notebooks/ yet (the examples are in progress)"
        )
    return found[0]


def rename_model(notebook: Path, model_name: str) -> None:
    """Give this run's model its own registry name, so each demo starts at version 1."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if "mlops:config" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            tree = ast.parse(source)
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "MODEL_NAME" for t in node.targets
                ):
                    lines = source.splitlines(keepends=True)
                    lines[node.lineno - 1] = f'MODEL_NAME = "{model_name}"\n'
                    cell["source"] = "".join(lines)
                    notebook.write_text(json.dumps(nb, indent=1) + "\n")
                    return
    raise DemoFailure(_current_step, f"{notebook.name} has no MODEL_NAME in its mlops:config cell")


# The second commit's change: shallower trees, which score 0.967 on the notebook's split against
# version 1's 0.933. The deploy gate holds a new version to the served one's accuracy too
# (GATE_TOLERANCE): more trees (150) score 0.900 there and would be registered, not served.
TUNING = ("MAX_DEPTH", 3)


def change_hyperparameter(notebook: Path, name: str, value: int | float) -> str:
    """Set hyperparameter `name` of the config or `parameters` cell to `value`; say what."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if not {"mlops:config", "parameters"} & set(tags):
            continue
        source = "".join(cell["source"])
        for node in ast.parse(source).body:
            if not (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name
                and isinstance(node.value, ast.Constant)
            ):
                continue
            old = node.value.value
            lines = source.splitlines(keepends=True)
            lines[node.lineno - 1] = f"{name} = {value!r}\n"
            cell["source"] = "".join(lines)
            notebook.write_text(json.dumps(nb, indent=1) + "\n")
            return f"{name} {old!r} -> {value!r}"
    raise DemoFailure(_current_step, f"{notebook.name} sets no {name} in its config cell")


def deliver_push(
    api: Api, work: Path, remote_url: str, before: str, after: str, secret: str
) -> int:
    payload = push_payload(
        work,
        before=before,
        after=after,
        branch="main",
        clone_url=remote_url,
        full_name="demo/iris-notebook",
    )
    delivery = build_delivery("push", payload, secret)
    answer = api.call(
        "POST", "/webhook/github", 202, content=delivery.body, headers=delivery.headers
    )
    print(f"delivery {delivery.delivery_id} accepted: pipeline {answer['pipeline_id']} queued")
    return int(answer["pipeline_id"])


def follow_pipeline(api: Api, base_url: str, pipeline_id: int) -> dict[str, Any]:
    """Stream the pipeline's log with `mlops logs --follow`, then return the pipeline."""
    cli = VENV_BIN / "mlops"
    if cli.exists():
        try:
            subprocess.run(
                [str(cli), "logs", str(pipeline_id), "--follow", "--api", base_url],
                timeout=PIPELINE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoFailure(_current_step, f"pipeline {pipeline_id} still running") from None
    deadline = time.monotonic() + PIPELINE_TIMEOUT_SECONDS
    while True:
        pipeline = api.call("GET", f"/pipelines/{pipeline_id}", 200)
        if pipeline["status"] in ("success", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise DemoFailure(
                _current_step, f"pipeline {pipeline_id} is still {pipeline['status']}"
            )
        time.sleep(1)
    phases = ", ".join(f"{p['name']} {p['status']}" for p in pipeline.get("phases", []))
    print(f"pipeline {pipeline_id}: {pipeline['status']} ({phases})")
    if pipeline["status"] != "success":
        raise DemoFailure(
            _current_step,
            f"pipeline {pipeline_id} ended {pipeline['status']}: {pipeline.get('error')}",
        )
    return pipeline


def predict(api: Api, model: str, *, quiet: bool = False) -> dict[str, Any]:
    answer = api.call("POST", f"/models/{model}/predict", 200, json={"data": [IRIS_ROW]})
    if not quiet:
        print(
            f"predict {IRIS_ROW} -> {answer['predictions']} "
            f"(version {answer.get('model_version')}, {answer.get('processing_time_ms')} ms)"
        )
    return answer


def run() -> list[str]:
    summary: list[str] = []
    os.environ["ALLOW_LOCAL_REPOS"] = "true"
    with step("start the local stack (make up)"):
        result = up()
        print(describe(result.plan))
        base_url = result.plan.backend_url
        api = Api(base_url)
        state = "was already up" if result.already_up else f"up in {result.seconds:.1f}s"
        summary.append(f"stack {state} at {base_url}")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = result.plan.layout.home / "demo" / stamp
    remote, work = root / "remote.git", root / "work"
    model = f"iris-demo-{stamp}"
    with step("create a local git repository from notebooks/"):
        source = find_iris_notebook()
        root.mkdir(parents=True)
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
        git(root, "clone", "--quiet", str(remote), str(work))
        relative = source.relative_to(REPO_ROOT)
        shutil.copytree(source.parent, work / relative.parent)
        notebook = work / relative
        rename_model(notebook, model)
        remote_url = remote.as_uri()
        print(f"remote {remote_url}, notebook {relative}, model {model}")

    with step("register the repository (POST /repos)"):
        # A secret of its own: a shared GITHUB_WEBHOOK_SECRET would not be shown in the answer.
        secret = secrets.token_hex(32)
        repo = api.call(
            "POST",
            "/repos",
            201,
            json={
                "github_url": remote_url,
                "branch": "main",
                "notebook_path": str(relative),
                "webhook_secret": secret,
            },
        )
        print(f"repo {repo['id']} registered; webhook URL {repo['webhook_url']}")

    with step("commit and push the notebook"):
        git(work, "add", "-A")
        git(work, "commit", "--quiet", "-m", "Add the iris classifier notebook")
        git(work, "push", "--quiet", "origin", "main")
        first_sha = git(work, "rev-parse", "HEAD")

    with step("deliver the push webhook (POST /webhook/github)"):
        pipeline_id = deliver_push(api, work, remote_url, ZERO_SHA, first_sha, secret)
    with step(f"follow pipeline {pipeline_id}"):
        first = follow_pipeline(api, base_url, pipeline_id)
        summary.append(
            f"push {first_sha[:8]} -> pipeline {pipeline_id} -> {model} v{first['model_version']}"
            f" (metrics {first.get('metrics')})"
        )
    with step("predict with version 1 (POST /models/{name}/predict)"):
        answer = predict(api, model)
        summary.append(f"prediction {answer['predictions']} from v{answer.get('model_version')}")

    with step("commit a hyperparameter change and push"):
        change = change_hyperparameter(notebook, *TUNING)
        git(work, "commit", "--quiet", "-am", f"Tune {change}")
        git(work, "push", "--quiet", "origin", "main")
        second_sha = git(work, "rev-parse", "HEAD")
        print(f"changed {change}")
    with step("deliver the second push webhook"):
        pipeline_id = deliver_push(api, work, remote_url, first_sha, second_sha, secret)
    with step(f"follow pipeline {pipeline_id}"):
        second = follow_pipeline(api, base_url, pipeline_id)
        gate = (second.get("params") or {}).get("gate_verdict") or {}
        if not second.get("deployed"):
            raise DemoFailure(
                _current_step,
                f"version {second['model_version']} was not served: {gate.get('reason')}",
            )
        summary.append(f"v{second['model_version']} gate: {gate.get('reason')}")
    with step("predict with version 2 (hot-swapped)"):
        answer = predict(api, model)
        if str(answer.get("model_version")) != str(second["model_version"]):
            raise DemoFailure(
                _current_step,
                f"served version {answer.get('model_version')}, expected {second['model_version']}",
            )
        summary.append(
            f"{change} -> v{second['model_version']} served, predicts {answer['predictions']}"
        )

    with step("roll back to version 1 (POST /models/{name}/rollback)"):
        # No version: back to the previously served one.
        api.call("POST", f"/models/{model}/rollback", 200, json={})
        # The registry alias moves at once; replicas apply the announcement right after.
        asked = time.monotonic()
        answer = predict(api, model, quiet=True)
        while str(answer.get("model_version")) != str(first["model_version"]):
            if time.monotonic() - asked > SWAP_TIMEOUT_SECONDS:
                raise DemoFailure(
                    _current_step,
                    f"still version {answer.get('model_version')} after {SWAP_TIMEOUT_SECONDS}s",
                )
            time.sleep(0.2)
            answer = predict(api, model, quiet=True)
        predict(api, model)
        summary.append(
            f"rollback -> v{first['model_version']} served again "
            f"({time.monotonic() - asked:.1f}s after the call)"
        )
    summary.append(
        f"explore: {base_url}/ui/ (dashboard), MLflow {result.plan.mlflow_url}; "
        "stop with `make down`"
    )
    return summary


def main() -> int:
    started = time.monotonic()
    try:
        summary = run()
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        print(
            "logs: `make logs`; the stack is left running (`make down` stops it)", file=sys.stderr
        )
        return 1
    print(f"\n==> demo done in {time.monotonic() - started:.0f}s")
    for line in summary:
        print(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
