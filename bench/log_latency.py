"""How long a log line takes to reach a WebSocket viewer (goal: p95 under 250 ms).

Run from the repository root:

    .venv/bin/python -m bench.log_latency                 # both parts below
    .venv/bin/python -m bench.log_latency --skip-cell     # publisher part only (~10 s)

1. Publisher → viewer. Lines published with the worker's LogPublisher at a steady rate reach
   (a) a plain Redis subscriber on the pipeline's channel: the baseline, what pub/sub itself
   costs, and (b) WebSocket viewers through a real backend process; both listen to the same
   lines in the same run, so the difference is what the backend adds.
2. Cell print → viewer. A real Celery worker runs a real notebook whose cell prints
   `TICK <i> <time.time()>` at a steady rate; a viewer measures the delay from each `print`
   to its arrival (kernel → papermill → worker → Redis → backend → WebSocket).
All parts run on this machine (same clock); each starts its own Redis, backend and worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bench.bench_stack import BenchStack
from mlops_cli.log_follow import events_of
from mlops_core.log_events import LogPublisher, log_channel
from mlops_core.settings import Settings
from mlops_core.task_queue import RUN_PIPELINE_TASK, make_celery
from tests.logs.notebook_repo import make_repo, printing_notebook

GOAL_P95_MS = 250.0


@dataclass
class Delays:
    """Delays in seconds of one receiver."""

    name: str
    values: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.values:
            return f"{self.name:<34} no lines received"
        ms = sorted(v * 1000 for v in self.values)
        p50, p95, p99 = (ms[min(len(ms) - 1, int(q * len(ms)))] for q in (0.5, 0.95, 0.99))
        return (
            f"{self.name:<34} n={len(ms):<6} p50={p50:7.2f} ms  p95={p95:7.2f} ms  "
            f"p99={p99:7.2f} ms  max={ms[-1]:7.2f} ms"
        )

    def p95_ms(self) -> float:
        ms = sorted(v * 1000 for v in self.values)
        return ms[min(len(ms) - 1, int(0.95 * len(ms)))]


async def ws_viewer(url: str, delays: Delays, *, from_text: bool = False) -> str | None:
    """Collect delays until the final event; return the pipeline's final status."""
    async with connect(url, max_queue=None) as ws:
        async for message in ws:
            now = time.time()
            for event in events_of(message):
                if event.get("stream") == "status":
                    return event.get("status")
                if from_text:
                    if event.get("stream") == "stdout" and event["text"].startswith("TICK "):
                        delays.values.append(now - float(event["text"].split()[2]))
                elif "seq" in event:
                    delays.values.append(now - event["ts"])
    return None


async def redis_subscriber(redis_url: str, pipeline_id: int, delays: Delays) -> None:
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(log_channel(pipeline_id))
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        now = time.time()
        event = json.loads(message["data"])
        if event.get("stream") == "status":
            break
        delays.values.append(now - event["ts"])
    await pubsub.aclose()
    await client.aclose()


def publish_steadily(redis_url: str, pipeline_id: int, lines: int, rate: float) -> None:
    publisher = LogPublisher(redis.Redis.from_url(redis_url), pipeline_id)
    start = time.perf_counter()
    for i in range(lines):
        # Sleep to the line's slot rather than a fixed gap, so the rate holds under load.
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publisher.publish(f"line {i} " + "x" * 80, phase="execute", cell=3, stream="stdout")
    publisher.publish("pipeline success", stream="status", status="success")


async def publisher_part(lines: int, rate: float, viewers: int) -> list[Delays]:
    with BenchStack() as stack:
        pipeline_id = stack.new_pipeline()
        baseline = Delays("baseline: Redis subscriber")
        ws = [Delays(f"WebSocket viewer {i + 1}/{viewers}") for i in range(viewers)]
        tasks = [asyncio.create_task(redis_subscriber(stack.redis_url, pipeline_id, baseline))]
        tasks += [asyncio.create_task(ws_viewer(stack.log_socket(pipeline_id), d)) for d in ws]
        await asyncio.sleep(1.0)  # every receiver subscribed before the first line
        thread = threading.Thread(
            target=publish_steadily, args=(stack.redis_url, pipeline_id, lines, rate)
        )
        thread.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        thread.join()
        merged = Delays(f"WebSocket viewers (all {viewers})")
        for d in ws:
            merged.values += d.values
        return [baseline, merged]


async def cell_part(ticks: int, interval: float) -> Delays:
    with BenchStack(with_worker=True) as stack:
        repo = make_repo(
            stack.workdir / "repo",
            printing_notebook(f"bench-logs-{uuid.uuid4().hex[:6]}", ticks, interval),
        )
        pipeline_id = stack.new_pipeline(
            status="queued",
            repo_url=repo.url,
            branch=repo.branch,
            notebook_path=repo.notebook_path,
            commit_sha=repo.commit_sha,
        )
        delays = Delays("cell print → WebSocket viewer")
        viewer = asyncio.create_task(
            ws_viewer(stack.log_socket(pipeline_id), delays, from_text=True)
        )
        await asyncio.sleep(0.5)
        make_celery(Settings(redis_url=stack.redis_url)).send_task(
            RUN_PIPELINE_TASK, args=[pipeline_id]
        )
        status = await asyncio.wait_for(viewer, 600)
        if status != "success":
            raise SystemExit(f"the benchmark pipeline ended {status}: see {stack.workdir}")
        return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000, help="lines in the publisher part")
    parser.add_argument("--rate", type=float, default=200.0, help="lines per second")
    parser.add_argument("--viewers", type=int, default=10, help="WebSocket viewers")
    parser.add_argument("--ticks", type=int, default=200, help="prints in the cell part")
    parser.add_argument("--tick-interval", type=float, default=0.02, help="seconds per print")
    parser.add_argument("--skip-cell", action="store_true", help="skip the worker part")
    args = parser.parse_args()

    print(f"publisher → viewer: {args.lines} lines at {args.rate:g}/s, {args.viewers} viewers")
    baseline, ws = asyncio.run(publisher_part(args.lines, args.rate, args.viewers))
    print(" ", baseline.summary())
    print(" ", ws.summary())
    added = statistics.median(ws.values) - statistics.median(baseline.values)
    print(f"  the backend adds {added * 1000:.2f} ms at the median over Redis pub/sub alone")
    results = [ws]
    if not args.skip_cell:
        print(f"cell print → viewer: {args.ticks} prints every {args.tick_interval:g} s")
        cell = asyncio.run(cell_part(args.ticks, args.tick_interval))
        print(" ", cell.summary())
        results.append(cell)
    for delays in results:
        verdict = "meets" if delays.p95_ms() < GOAL_P95_MS else "MISSES"
        print(f"goal p95 < {GOAL_P95_MS:g} ms: {delays.name}: {verdict}")


if __name__ == "__main__":
    main()
