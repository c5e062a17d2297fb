"""Serving benchmark: our model server against the servers users would otherwise pick.

The anchors are `mlflow models serve`, Seldon MLServer (plain, and with adaptive batching) and a
plain FastAPI app as the floor, all measured in one interleaved run with wrk.

Every server serves the same fitted models (LogisticRegression and a 100-tree RandomForest on
iris) with the same scikit-learn and numpy, on loopback. For each model and load (one row from
1, 32 and 64 connections, a 1,000-row request from one connection) each server is measured for
--duration seconds after --warmup seconds of the same load; the rounds repeat everything with the
servers in a rotated order, so that a slow moment of the machine falls on all of them alike.
It prints requests/s, p50, p99 and errors per server, our requests/s divided by each anchor's,
and the peak RSS of each server's process tree. Before measuring, one request of each size to
each server checks that it answers the labels scikit-learn gives.

Run: .venv/bin/python -m bench.serving [--duration 10] [--warmup 2] [--rounds 2]
                                        [--only ours,mlserver-batched] [--quick] [--workers 1,2]
--quick: 2 s per measurement, 1 s warm-up, one round (a smoke run, not figures to quote).
--workers 1,2: one server of ours per MODEL_SERVER_WORKERS value, measured side by side, with
each one's requests/s divided by the first's (how ours scales with processes).
It installs wrk (Debian) if missing, builds MLServer's environment once with uv under
--cache-dir (default ~/.cache/notebook-mlops/bench), and starts a private Redis, MLflow server
and every server on free ports. Our server takes its settings from the environment as deployed
(e.g. MAX_BATCH_SIZE=32 MAX_BATCH_DELAY_MS=2 .venv/bin/python -m bench.serving).
Takes ~17 min with the defaults (80 measurements of 12 s), ~3 min with --quick; measure on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
from itertools import product
from pathlib import Path

import httpx
import mlflow
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from bench.serving.anchor_envs import default_cache_dir
from bench.serving.report import Load, Memory, combine, figures_table, memory_table, ratio_table
from bench.serving.servers import (
    DEFAULT_ENDPOINTS,
    ENDPOINT_KEYS,
    MLSERVER_VERSION,
    Endpoint,
    Fleet,
    Model,
)
from bench.serving.wrk import REPO_ROOT, WrkSummary, ensure_wrk, run_wrk, write_script
from tests.support.processes import wait_for

LOADS = (Load(1, 1), Load(1, 32), Load(1, 64), Load(1000, 1))
BATCH_ROWS = 1000
# Our server's settings worth stating next to its figures when set in the environment.
OUR_SETTINGS = ("MODEL_SERVER_WORKERS", "MAX_BATCH_SIZE", "MAX_BATCH_DELAY_MS", "KERNEL_SANDBOX")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=int, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=int, help="seconds of load before each (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--only",
        help=f"comma-separated servers among {', '.join(ENDPOINT_KEYS)} "
        f"(default: {', '.join(DEFAULT_ENDPOINTS)})",
    )
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 s warm-up, 1 round")
    parser.add_argument(
        "--workers",
        help="comma-separated MODEL_SERVER_WORKERS values: one server of ours per value "
        "(default: one server, MODEL_SERVER_WORKERS from the environment)",
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    quick = {"duration": 2, "warmup": 1, "rounds": 1}
    full = {"duration": 10, "warmup": 2, "rounds": 2}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    keys = args.only.split(",") if args.only else list(DEFAULT_ENDPOINTS)
    unknown = [key for key in keys if key not in ENDPOINT_KEYS]
    if unknown or not keys:
        parser.error(f"--only: unknown {unknown}; choose among {', '.join(ENDPOINT_KEYS)}")
    if min(args.duration, args.warmup + 1, args.rounds) < 1:
        parser.error("--duration and --rounds must be at least 1, --warmup at least 0")
    args.keys = keys
    try:
        args.workers = [int(w) for w in args.workers.split(",")] if args.workers else []
    except ValueError:
        parser.error(f"--workers: comma-separated whole numbers, got {args.workers!r}")
    if any(w < 1 for w in args.workers) or len(set(args.workers)) != len(args.workers):
        parser.error("--workers: distinct values of at least 1")
    return args


def iris_models() -> tuple[list[Model], np.ndarray]:
    x, y = load_iris(return_X_y=True)
    models = [
        Model(
            "logistic",
            "LogisticRegression",
            "iris-logistic",
            LogisticRegression(max_iter=500).fit(x, y),
        ),
        Model(
            "forest",
            "RandomForest, 100 trees",
            "iris-forest",
            RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y),
        ),
    ]
    return models, x


def check_answers(endpoint: Endpoint, model: Model, rows: list[list[float]]) -> None:
    """One request answers 200 with scikit-learn's own labels (servers may still be loading)."""
    url = endpoint.url(model.name)
    body = endpoint.body(rows)

    def answered() -> httpx.Response | None:
        response = httpx.post(url, json=body, timeout=60)
        return response if response.status_code == 200 else None

    response = wait_for(answered, 60, 0.5, f"{endpoint.title} answering {model.name}")
    labels = [int(label) for label in endpoint.labels(response.json())]
    expected = model.estimator.predict(np.asarray(rows)).tolist()
    if labels != expected:
        raise SystemExit(
            f"{endpoint.title} answered other labels than scikit-learn for {model.name} "
            f"({len(rows)} rows): {labels[:10]} vs {expected[:10]}"
        )


def header(args: argparse.Namespace, wrk: str) -> str:
    version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    wrk_version = " ".join((version.stdout or version.stderr).split()[:2])
    ours = {k: os.environ[k] for k in OUR_SETTINGS if k in os.environ}
    return "\n".join(
        [
            f"Serving benchmark: {os.cpu_count()} CPUs, {platform.platform()}, "
            f"Python {platform.python_version()}",
            f"scikit-learn {sklearn.__version__}, numpy {np.__version__} in every server; "
            f"mlflow {mlflow.__version__}, MLServer {MLSERVER_VERSION}, {wrk_version}",
            f"{args.duration} s per measurement after {args.warmup} s warm-up, "
            f"{args.rounds} round(s), median over rounds; wrk: 1 thread, closed loop",
            f"ours: settings from the environment {ours or '(defaults)'}; every server answers "
            "labels only (ours is asked to leave out probabilities)",
            "load average (1, 5, 15 min) before measuring: "
            + ", ".join(f"{load:.2f}" for load in args.load_before)
            + (
                "; after: " + ", ".join(f"{load:.2f}" for load in args.load_after)
                if getattr(args, "load_after", None)
                else ""
            ),
        ]
    )


Runs = dict[tuple[str, str, str], list[WrkSummary]]  # (model, load, server) -> one per round
Peaks = dict[tuple[str, str], Memory]  # (server, model) -> peak RSS and processes


def write_bodies(
    work: Path, endpoints: list[Endpoint], rows_sets: list[list[list[float]]]
) -> dict[tuple[str, int], Path]:
    """Each server's request body for each row count, as files for wrk: (server, rows) -> path."""
    bodies: dict[tuple[str, int], Path] = {}
    for endpoint in endpoints:
        for rows in rows_sets:
            path = work / f"body-{endpoint.key}-{len(rows)}.json"
            path.write_text(json.dumps(endpoint.body(rows), separators=(",", ":")))
            bodies[(endpoint.key, len(rows))] = path
    return bodies


def measure(
    args: argparse.Namespace,
    wrk: str,
    script: Path,
    models: list[Model],
    endpoints: list[Endpoint],
    bodies: dict[tuple[str, int], Path],
) -> tuple[Runs, Peaks]:
    """Every round: every model and load, every server in turn (the order rotates per round)."""
    runs: Runs = {}
    peaks: Peaks = {}
    for round_index in range(args.rounds):
        shift = round_index % len(endpoints)
        order = endpoints[shift:] + endpoints[:shift]
        for model, load, endpoint in product(models, LOADS, order):
            url = endpoint.url(model.name)
            body = bodies[(endpoint.key, load.rows)]
            common = {"connections": load.connections, "script": script}
            if args.warmup:
                run_wrk(wrk, url, body, seconds=args.warmup, **common)
            result = run_wrk(wrk, url, body, seconds=args.duration, **common)
            runs.setdefault((model.key, load.label, endpoint.key), []).append(result)
            memory = endpoint.memory(model.name)
            peak = peaks.get((endpoint.key, model.key))
            if peak is None or memory.rss_bytes > peak.rss_bytes:
                peaks[(endpoint.key, model.key)] = memory
            print(
                f"round {round_index + 1}/{args.rounds} {model.key:8} {load.label:18} "
                f"{endpoint.title:30} {result.requests_per_second:8,.0f} req/s  "
                f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                f"errors {result.error_count}",
                flush=True,
            )
    return runs, peaks


def report(
    args: argparse.Namespace,
    wrk: str,
    models: list[Model],
    endpoints: list[Endpoint],
    runs: Runs,
    peaks: Peaks,
) -> None:
    servers = [(e.key, e.title) for e in endpoints]
    anchors = [(key, title) for key, title in servers if not key.startswith("ours")]
    print(f"\n{header(args, wrk)}")
    for model in models:
        figures = {
            (load, key): combine(results)
            for (model_key, load, key), results in runs.items()
            if model_key == model.key
        }
        print(f"\n### {model.title}\n")
        print(figures_table(figures, servers, LOADS))
        for ours_key, ours_title in servers:
            if ours_key.startswith("ours") and anchors:
                print(f"\n{ours_title}: requests/s divided by each anchor's\n")
                print(ratio_table(figures, ours_key, anchors, LOADS))
        for protocol in ("ours-w", "ours-v2-w"):
            scaled = [(key, title) for key, title in servers if key.startswith(protocol)]
            for key, title in scaled[1:]:
                print(f"\n{title}: requests/s divided by {scaled[0][1]}'s\n")
                print(ratio_table(figures, key, scaled[:1], LOADS))
    print("\n### Memory: peak RSS of each server's process tree (children included)\n")
    print(memory_table(peaks, servers, [(m.key, m.title) for m in models]))
    print(
        "\n(MiB in N: RSS summed over the N processes of the tree. mlflow models serve runs one "
        "server per model; the others hold both models in one tree. Ours excludes the Redis and "
        "MLflow server it follows.)\nrun: .venv/bin/python -m bench.serving "
        f"--duration {args.duration} --warmup {args.warmup} --rounds {args.rounds} "
        f"--only {','.join(args.keys)}"
        + (f" --workers {','.join(map(str, args.workers))}" if args.workers else ""),
        flush=True,
    )


def main() -> None:
    args = parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its notes on logging models
    wrk = ensure_wrk()
    sandbox_tool = [REPO_ROOT / "scripts" / "ensure_debian_packages.sh", "bubblewrap:bwrap"]
    subprocess.run(sandbox_tool, check=True)
    models, x = iris_models()
    single = x[:1].tolist()
    batch = np.resize(x, (BATCH_ROWS, x.shape[1])).tolist()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        script = write_script(work)
        with Fleet(work, models, x[:2], args.cache_dir) as fleet:
            endpoints = fleet.start(args.keys, args.workers)
            for endpoint, model, rows in product(endpoints, models, (single, batch)):
                check_answers(endpoint, model, rows)
            bodies = write_bodies(work, endpoints, [single, batch])
            args.load_before = os.getloadavg()
            print(header(args, wrk), flush=True)
            runs, peaks = measure(args, wrk, script, models, endpoints, bodies)
            args.load_after = os.getloadavg()
    report(args, wrk, models, endpoints, runs, peaks)


if __name__ == "__main__":
    main()
