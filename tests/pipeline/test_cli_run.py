"""`mlops run`: a notebook's tagged cells run here as a pipeline runs them (real kernel, MLflow).

That a local run gives a pipeline's metrics for the same notebook is checked beside a real
pipeline run, in tests/pipeline/test_examples.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_cli.main import main as cli_main
from mlops_core import sandbox
from tests.pipeline.conftest import build_notebook, unique_model_name


def gated_notebook(model_name: str, training: str = "") -> str:
    """A fast notebook whose `accuracy` is a papermill parameter (default 0.9)."""
    return build_notebook(
        [
            (("mlops:config",), f'MODEL_NAME = "{model_name}"\nVERSION = "0.1"\nC = 1.0'),
            (("parameters",), "ACCURACY = 0.9"),
            ((), "raise RuntimeError('an untagged cell must not run')"),
            (("mlops:preprocessing",), "X = [[0.0, 1.0], [1.0, 0.0]] * 2\ny = [0, 1] * 2"),
            (
                ("mlops:training",),
                "from sklearn.linear_model import LogisticRegression\n"
                + training
                + "model = LogisticRegression(C=C).fit(X, y)\nprint('trained', PIPELINE_ID)",
            ),
            (
                ("mlops:evaluation",),
                "import mlflow\nmlflow.log_metric('accuracy', ACCURACY)\n"
                "mlflow.log_param('solver', 'lbfgs')",
            ),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_local_run_reports_metrics_gate_and_model_and_logs_to_mlflow(
    tmp_path: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    name = unique_model_name("local")
    notebook = tmp_path / "repo" / "train.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(gated_notebook(name))
    out_dir = tmp_path / "out"

    code, out, err = run(
        capsys, str(notebook), "--json", "-o", str(out_dir), "--mlflow", mlflow_uri
    )
    assert code == 0, out + err
    assert all(line.startswith("{") for line in out.splitlines()), out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    texts = [e["text"] for e in events]
    assert "running unsandboxed" in texts[0]
    # The pipeline's own lines: the same cells, in the same order, with their output.
    started = [t for t in texts if t.endswith(" started")]
    assert started == [
        "▶ cell 1 (mlops:config) started",
        "▶ cell 2 (parameters) started",
        "▶ injected parameters (injected-parameters) started",
        "▶ cell 4 (mlops:preprocessing) started",
        "▶ cell 5 (mlops:training) started",
        "▶ cell 6 (mlops:evaluation) started",
        "▶ cell 7 (mlops:export) started",
    ]
    assert {"phase": "execute", "stream": "stdout", "text": "trained 0", "cell": 4}.items() <= next(
        e for e in events if e["text"] == "trained 0"
    ).items()
    final = events[-1]
    assert (final["stream"], final["status"]) == ("status", "success")
    assert final["metrics"] == {"accuracy": 0.9}
    assert {
        "passed": True,
        "reason": "gate accuracy >= 0.8 passed: accuracy = 0.9",
        "served_version": None,
    }.items() <= final["gate"].items()
    assert (
        f"no version of {name} is served at {mlflow_uri} (alias 'production'): judged by "
        "its gate alone" in texts
    )
    assert final["model_path"] == str(out_dir / "output" / "model.joblib")
    assert Path(final["model_path"]).stat().st_size > 0

    client = MlflowClient(mlflow_uri)
    logged = client.get_run(final["mlflow_run_id"])
    assert logged.info.status == "FINISHED" and logged.data.metrics == {"accuracy": 0.9}
    assert logged.data.params["solver"] == "lbfgs" and logged.data.params["C"] == "1.0"
    assert logged.data.tags["mlops.local_run"] == "true"
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"notebook", "model"} <= artifacts

    # A parameter (papermill's -p) reaches the notebook; a gate it fails exits 5.
    # (Another folder: MLflow keeps a store per folder in this process, as `mlops run` runs once.)
    again = tmp_path / "again"
    code, out, _ = run(capsys, str(notebook), "-o", str(again), "-p", "ACCURACY", "0.5")
    assert code == 5
    assert "[gate] gate accuracy >= 0.8 failed: accuracy = 0.5" in out.splitlines()
    assert "[validate] parameters given: ACCURACY=0.5" in out.splitlines()
    assert out.splitlines()[-1] == "[mlops] run success"


def test_a_file_the_notebook_left_open_is_complete_after_the_kernel_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kernel ends right after its exit handlers, skipping the interpreter's teardown
    (mlops_core/kernel_startup.py); a file left open is still flushed, as teardown did."""
    notebook = tmp_path / "repo" / "train.ipynb"
    notebook.parent.mkdir()
    left_open = "notes = open(str(MODEL_OUTPUT_PATH) + '.txt', 'w')\nnotes.write('kept ' * 1000)\n"
    notebook.write_text(gated_notebook(unique_model_name("open"), training=left_open))
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, str(notebook), "-o", str(out_dir))
    assert code == 0, out + err
    assert (out_dir / "output" / "model.joblib.txt").read_text() == "kept " * 1000


def test_a_failing_cell_a_broken_contract_and_bad_input_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(gated_notebook(unique_model_name("local"), training="1 / 0\n"))
    code, out, _ = run(capsys, str(notebook), "-o", str(tmp_path / "out"))
    assert code == 1
    assert (
        "[execute] ERROR execute: cell 5 (mlops:training) raised ZeroDivisionError: "
        "division by zero" in out.splitlines()
    )
    assert out.splitlines()[-1] == "[mlops] run failed"

    # Checked before any kernel starts.
    broken = tmp_path / "broken.ipynb"
    broken.write_text(build_notebook([(("mlops:training",), "model = 1")]))
    code, out, _ = run(capsys, str(broken), "-o", str(tmp_path / "out"))
    assert (
        code == 1
        and "[validate] ERROR contract: missing tag mlops:config (no code cell carries it)" in out
    )
    code, _, err = run(capsys, str(tmp_path / "missing.ipynb"))
    assert code == 3 and "no such notebook file" in err
    code, _, err = run(capsys, str(notebook), "-p", "MODEL_NAME", "other")
    assert code == 64 and "mlops:config" in err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    code, _, err = run(capsys, str(notebook), "-o", str(mine))
    assert code == 64 and "not made by `mlops run`" in err
    assert (mine / "thesis.tex").read_text() == "keep me"


def test_the_verdict_holds_the_run_to_the_version_the_mlflow_registry_serves(
    tmp_path: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the deploy phase: a run passing its gate but worse than the served version by more
    than GATE_TOLERANCE fails it (exit 5), the verdict naming both numbers."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    name = unique_model_name("local-served")
    client = MlflowClient(mlflow_uri)
    served_run = client.create_run(client.create_experiment(name))
    client.log_metric(served_run.info.run_id, "accuracy", 0.95)
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"{served_run.info.artifact_uri}/model", served_run.info.run_id
    ).version
    client.set_registered_model_alias(name, "production", version)
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(gated_notebook(name))

    code, out, err = run(
        capsys, str(notebook), "--json", "-o", str(tmp_path / "out"), "--mlflow", mlflow_uri
    )
    assert code == 5, out + err
    events = [json.loads(line) for line in out.splitlines()]
    refused = (
        f"accuracy 0.900 < served v{version} 0.950 - 0.01: worse than the served version by "
        "more than GATE_TOLERANCE (gate accuracy >= 0.8 passed: accuracy = 0.9)"
    )
    assert {"phase": "gate", "text": refused}.items() <= next(
        e for e in events if e["phase"] == "gate"
    ).items()
    final = events[-1]
    assert final["status"] == "success" and final["metrics"] == {"accuracy": 0.9}
    assert {
        "passed": False,
        "failed_rule": "served",
        "value": 0.9,
        "served_version": str(version),
        "served_value": 0.95,
        "tolerance": 0.01,
    }.items() <= final["gate"].items()
    # The run itself is still copied to the server.
    assert client.get_run(final["mlflow_run_id"]).data.metrics == {"accuracy": 0.9}


needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, sandbox.REQUIRED_PROGRAMS)),
    reason="the sandbox needs root and bubblewrap",
)


@needs_sandbox
def test_sandbox_runs_the_kernel_in_the_pipelines_sandbox_with_the_same_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same notebook with and without --sandbox: the same metrics and model, the files
    beside the notebook readable in both, a secret in MLOPS_HOME readable only without."""
    home = tmp_path / "mlops-home"
    (home / "secrets").mkdir(parents=True)
    secret = home / "secrets" / "encryption.key"
    secret.write_text("a-secret-key")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    notebook = tmp_path / "repo" / "train.ipynb"
    notebook.parent.mkdir()
    (notebook.parent / "rows.txt").write_text("beside the notebook")
    probe = (
        "print('data:', open('rows.txt').read())\n"
        f"try:\n    print('secret:', open({str(secret)!r}).read())\n"
        "except OSError as exc:\n    print('secret:', type(exc).__name__)\n"
    )
    notebook.write_text(gated_notebook(unique_model_name("local"), training=probe))

    outcomes = {}
    for flag in ("", "--sandbox"):
        args = [str(notebook), "--json", "-o", str(tmp_path / f"out{flag}")]
        code, out, err = run(capsys, *args, *([flag] if flag else []))
        assert code == 0, out + err
        outcomes[flag] = [json.loads(line) for line in out.splitlines()]
    plain, boxed = ([e["text"] for e in outcomes[flag]] for flag in ("", "--sandbox"))
    assert plain[0].startswith("running unsandboxed")
    assert boxed[0].startswith("running in the platform's kernel sandbox (bubblewrap: ")
    assert "data: beside the notebook" in plain and "data: beside the notebook" in boxed
    assert "secret: a-secret-key" in plain  # the file is there: only the sandbox hides it
    assert "secret: FileNotFoundError" in boxed  # MLOPS_HOME is an empty tmpfs there
    finals = [outcomes[flag][-1] for flag in ("", "--sandbox")]
    assert finals[0]["metrics"] == finals[1]["metrics"] == {"accuracy": 0.9}
    assert finals[0]["gate"] == finals[1]["gate"]
    assert Path(finals[1]["model_path"]).stat().st_size > 0


def test_sandbox_refuses_naming_why_when_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bubblewrap on PATH: the run fails (exit 1) before any kernel starts, naming what is
    missing; an --output beside the notebook (which the sandbox would hide) is bad usage."""
    notebook = tmp_path / "repo" / "train.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(gated_notebook(unique_model_name("local")))
    code, _, err = run(capsys, str(notebook), "--sandbox", "-o", str(notebook.parent / "out"))
    assert code == 64 and "the run's folder cannot be directly in the notebook's folder" in err

    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, out, _ = run(capsys, str(notebook), "--sandbox", "-o", str(tmp_path / "out"))
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith(
        "[mlops] ERROR --sandbox: the kernel sandbox needs bwrap, prlimit, setpriv (Debian: "
        "apt-get install bubblewrap util-linux)"
    ), lines
    assert "run without --sandbox to run the kernel unsandboxed" in lines[0]
    assert not any("kernel starting" in line for line in lines)
    assert lines[-1] == "[mlops] run failed"
