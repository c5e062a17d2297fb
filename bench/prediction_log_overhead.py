"""What the prediction log costs a prediction: the model server with it on vs off, in one run.

Two model-server replicas serve the same registered forest from one Redis, one with
PREDICTION_LOG_SAMPLE_RATE=1 (every answer, and every failure, appended to the log's stream)
and one with 0 (nothing logged); metrics are on in both (they cannot be turned off). Rounds
alternate which replica goes first (on/off, then off/on), so that a machine getting busier or
quieter during the run weighs on both sides alike; each round sends `--requests` /predict
calls from `--concurrency` clients to each. Figures are pooled over the rounds: throughput is
requests over the time spent, p99 is of every latency. On a machine busy with other work
those two swing from round to round, so the bench also reports the CPU time each replica's
server process spent per request (read from the kernel around each round), which the rest of
the machine disturbs far less. No backend stores the stream (the stream is capped, so appends
cost the same): this measures what logging adds to the model server. Goal (issue 11):
throughput within 10% of off, p99 within 15%.

Run: .venv/bin/python -m bench.prediction_log_overhead [--rounds 6] [--requests 1500]
[--concurrency 32] (starts its own Redis, MLflow server and two model servers on free ports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.predict_latency import NAME, hammer, register_bench_model, start_model_server
from tests.support.processes import ManagedProcess, free_port
from tests.support.services import MlflowServer, RedisServer

THROUGHPUT_GOAL = 0.90  # on / off
P99_GOAL = 1.15  # on / off


@dataclass
class Side:
    """One replica's latencies, time spent and server CPU time over every round."""

    url: str
    server: psutil.Process
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    round_rps: list[float] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        """CPU time of the server's processes: the launcher and its uvicorn processes
        (MODEL_SERVER_WORKERS), not their sandboxed model processes, which logging never
        touches (those run python -I -m model_server.model_child)."""
        total = 0.0
        for process in [self.server, *self.server.children(recursive=True)]:
            try:
                if "model_server.model_child" in " ".join(process.cmdline()):
                    continue
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def add(self, latencies: list[float], wall: float, cpu: float) -> None:
        self.latencies += latencies
        self.wall += wall
        self.cpu += cpu
        self.round_rps.append(len(latencies) / wall)

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu / len(self.latencies) * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def measure(
    sides: dict[str, Side],
    body: dict[str, Any],
    check: Callable[[dict[str, Any]], None],
    rounds: int,
    requests: int,
    concurrency: int,
) -> None:
    """Interleaved rounds over both sides, first one order, then the other."""
    for side in sides.values():
        asyncio.run(hammer(side.url, [body] * 100, concurrency, check))  # warm-up
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            side = sides[name]
            before = side.cpu_seconds()
            latencies, wall = asyncio.run(hammer(side.url, [body] * requests, concurrency, check))
            side.add(latencies, wall, side.cpu_seconds() - before)


def report(batch: int, on: Side, off: Side) -> list[str]:
    rps_ratio = on.rps / off.rps
    p99_ratio = on.percentile(0.99) / off.percentile(0.99)
    per_round = [a / b for a, b in zip(on.round_rps, off.round_rps, strict=True)]
    rps_verdict = "meets" if rps_ratio >= THROUGHPUT_GOAL else "misses"
    p99_verdict = "meets" if p99_ratio <= P99_GOAL else "misses"
    return [
        *(
            f"batch {batch}: log {label:<3} {side.rps:8.0f} req/s  "
            f"p50 {side.percentile(0.5):7.2f} ms  p99 {side.percentile(0.99):7.2f} ms  "
            f"server CPU {side.cpu_ms_per_request:.3f} ms/request"
            for label, side in (("on", on), ("off", off))
        ),
        f"batch {batch}: server CPU per request on/off "
        f"{on.cpu_ms_per_request / off.cpu_ms_per_request:.3f}",
        f"batch {batch}: throughput on/off {rps_ratio:.3f} ({rps_verdict} the goal "
        f">= {THROUGHPUT_GOAL}; per round {min(per_round):.2f} to {max(per_round):.2f}, "
        f"median {statistics.median(per_round):.2f})",
        f"batch {batch}: p99 on/off {p99_ratio:.3f} ({p99_verdict} the goal <= {P99_GOAL})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500, help="per side and round, batch 1")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    with tempfile.TemporaryDirectory(prefix="bench-prediction-log-") as tmp:
        work = Path(tmp)
        (work / "redis").mkdir()
        redis_server = RedisServer(work / "redis")
        redis_server.start()
        tracking = MlflowServer(work / "mlflow")
        tracking.start()
        processes: list[ManagedProcess] = []
        try:
            _, rows, _ = register_bench_model(tracking.uri)
            sides: dict[str, tuple[str, psutil.Process]] = {}
            for label, rate in (("on", "1"), ("off", "0")):
                port = free_port()
                env = {
                    "REDIS_URL": redis_server.url,
                    "MLFLOW_TRACKING_URI": tracking.uri,
                    "NO_PROXY": "127.0.0.1,localhost",
                    "PREDICTION_LOG_SAMPLE_RATE": rate,
                    "MODEL_SERVER_REPLICA_ID": f"bench-log-{label}",
                }
                server = start_model_server(port, env, work / f"model-server-{label}.log")
                processes.append(server)
                sides[label] = (
                    f"http://127.0.0.1:{port}/predict/{NAME}",
                    psutil.Process(server.pid),
                )

            lines: list[str] = []
            for batch in (1, 100):
                body = {"data": (rows * 100)[:batch]}

                def check(answer: dict[str, Any], expected: int = batch) -> None:
                    assert len(answer["predictions"]) == expected

                measured = {label: Side(url, proc) for label, (url, proc) in sides.items()}
                requests = args.requests if batch == 1 else max(200, args.requests // 5)
                measure(measured, body, check, args.rounds, requests, args.concurrency)
                lines += report(batch, measured["on"], measured["off"])
            print(
                f"\nPrediction log on (PREDICTION_LOG_SAMPLE_RATE=1) vs off (=0): "
                f"RandomForest(20 trees) on iris, /predict, {args.concurrency} concurrent "
                f"clients, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs"
            )
            print("\n".join(lines))
        finally:
            for process in processes:
                process.stop()
            tracking.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
