"""A git repository holding a contract-abiding notebook whose training cell prints timed lines.

Each printed line is `TICK <i> <time.time()>`, so a viewer can check that cell output arrives
while the cell runs and measure the delay from `print` to the screen (bench/log_latency.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

NOTEBOOK_PATH = "notebooks/train.ipynb"


def printing_notebook(model_name: str, ticks: int, interval: float) -> nbformat.NotebookNode:
    def cell(tag: str, source: str) -> nbformat.NotebookNode:
        return new_code_cell(source, metadata={"tags": [tag]})

    notebook = new_notebook(
        cells=[
            cell("mlops:config", f'MODEL_NAME = "{model_name}"\nVERSION = "1.0.0"'),
            cell(
                "mlops:preprocessing",
                "from sklearn.datasets import load_iris\nX, y = load_iris(return_X_y=True)",
            ),
            cell(
                "mlops:training",
                "import time\n"
                "from sklearn.linear_model import LogisticRegression\n"
                f"for i in range({ticks}):\n"
                '    print(f"TICK {i} {time.time():.6f}", flush=True)\n'
                f"    time.sleep({interval})\n"
                "model = LogisticRegression(max_iter=300).fit(X, y)",
            ),
            cell(
                "mlops:evaluation",
                'import mlflow\nmlflow.log_metric("accuracy", model.score(X, y))',
            ),
            cell("mlops:export", "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


@dataclass(frozen=True)
class NotebookRepo:
    url: str
    commit_sha: str
    notebook_path: str = NOTEBOOK_PATH
    branch: str = "main"


def make_repo(root: Path, notebook: nbformat.NotebookNode) -> NotebookRepo:
    """A local repository (branch main, one commit) that the worker can fetch over file://."""
    root.mkdir(parents=True, exist_ok=True)
    (root / NOTEBOOK_PATH).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, root / NOTEBOOK_PATH)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "--quiet", "--initial-branch=main")
    git("add", ".")
    git("commit", "--quiet", "-m", "notebook")
    return NotebookRepo(url=root.resolve().as_uri(), commit_sha=git("rev-parse", "HEAD"))
