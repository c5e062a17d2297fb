"""`mlops run`: a notebook's tagged cells run here as a pipeline runs them (real kernel, MLflow).

That a local run gives a pipeline's metrics for the same notebook is checked beside a real
pipeline run, in tests/pipeline/test_examples.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_cli.main import main as cli_main
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
    assert final["gate"] == {
        "passed": True,
        "reason": "gate accuracy >= 0.8 passed: accuracy = 0.9",
    }
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
