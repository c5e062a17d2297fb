"""What running a model in its sandboxed model process costs per prediction.

Since model code never runs in the model server, every prediction crosses a pipe to the model
process (JSON both ways). This measures that crossing against the same model called in this
process (the old path), in one run: a RandomForest (100 trees) and a LogisticRegression on iris,
one row and 100 rows per call, sequential calls. Prints mean latency per call and the ratio.

Run (as root with bubblewrap, or KERNEL_SANDBOX=off to measure the pipe alone):
    .venv/bin/python -m bench.model_process [--calls 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlops_core.settings import Settings
from model_server.estimator import load
from model_server.model_process import ModelProcess


def mean_ms(call: Callable[[], Any], calls: int) -> float:
    for _ in range(20):
        call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    settings = Settings()
    x, y = load_iris(return_X_y=True)
    models = {
        "forest": RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y),
        "logistic": LogisticRegression(max_iter=500).fit(x, y),
    }
    print(f"sandbox: {settings.kernel_sandbox}; {args.calls} sequential calls each")
    print(f"{'model':10} {'rows':>5} {'in-process ms':>14} {'model process ms':>17} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as cache:
        for name, model in models.items():
            folder = Path(cache) / name
            folder.mkdir()
            mlflow.sklearn.save_model(
                model,
                str(folder / "model"),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
            in_process = load(folder / "model")
            process = ModelProcess(settings, folder)
            try:
                loaded = process.ask({"op": "load", "path": str(folder / "model")}, 300)
                assert loaded["ok"], loaded
                for count in (1, 100):
                    rows = x[:count].tolist()
                    local = mean_ms(lambda r=rows, m=in_process: m.outputs(r), args.calls)
                    remote = mean_ms(
                        lambda r=rows, p=process: p.ask({"op": "predict", "rows": r}, 30),
                        args.calls,
                    )
                    ratio = remote / local
                    print(f"{name:10} {count:5d} {local:14.3f} {remote:17.3f} {ratio:6.2f}")
            finally:
                process.stop()


if __name__ == "__main__":
    main()
