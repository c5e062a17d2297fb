"""How many concurrent WebSocket viewers one backend process holds with every line delivered.

Run from the repository root:

    .venv/bin/python -m bench.ws_viewers                          # levels 1,100,500,1000,2000
    .venv/bin/python -m bench.ws_viewers --levels 1,1000,4000 --lines 200 --rate 50

One backend process (uvicorn, one event loop) serves every level. At each level, N viewers
connect to a fresh pipeline from separate client processes, then the worker's LogPublisher
writes `--lines` lines at `--rate` lines/s and a final event. A viewer counts as served when it
received every line exactly once, in order, and the final event. The 1-viewer level is the
baseline for the delays. The client processes share the machine with the backend, so on a
small machine the figure is a floor for what the backend alone could hold.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import redis
from websockets.asyncio.client import connect

from bench.bench_stack import BenchStack
from mlops_cli.log_follow import events_of
from mlops_core.log_events import LogPublisher

HANDSHAKES_AT_ONCE = 50


@dataclass
class LevelResult:
    viewers: int
    connected: int
    served: int
    delays_ms: list[float]
    seconds: float

    def row(self) -> str:
        ms = sorted(self.delays_ms) or [float("nan")]
        p50, p95 = ms[int(0.5 * (len(ms) - 1))], ms[int(0.95 * (len(ms) - 1))]
        return (
            f"{self.viewers:>8} {self.connected:>10} {self.served:>8} "
            f"{p50:>10.1f} {p95:>10.1f} {ms[-1]:>10.1f} {self.seconds:>9.1f}"
        )


class Handshakes:
    """Lets a client process tell when every one of its viewers has connected (or failed to)."""

    def __init__(self, count: int) -> None:
        self.gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        self._left = count
        self.opened = 0
        self.all_done = asyncio.Event()

    def one_done(self) -> None:
        self._left -= 1
        if self._left == 0:
            self.all_done.set()


async def _viewer(url: str, lines: int, delays: list[float], every: int, hs: Handshakes) -> bool:
    """True when every line arrived exactly once, in order, then the final event."""
    try:
        async with hs.gate:  # a few handshakes at a time, as a crowd of browsers would arrive
            ws = await connect(url, max_queue=None, open_timeout=120, ping_timeout=None)
            hs.opened += 1
    finally:
        hs.one_done()
    expected = 1
    async with ws:
        async for message in ws:
            now = time.time()
            for event in events_of(message):
                if "seq" not in event:
                    continue  # keep-alive
                if event["seq"] != expected:
                    return False
                if event["stream"] == "status":
                    return expected == lines + 1
                if expected % every == 0:
                    delays.append((now - event["ts"]) * 1000)
                expected += 1
    return False


async def _clients(
    url: str, count: int, lines: int, connected: Queue[Any], every: int
) -> dict[str, Any]:
    delays: list[float] = []
    handshakes = Handshakes(count)
    tasks = [
        asyncio.create_task(_viewer(url, lines, delays, every, handshakes)) for _ in range(count)
    ]
    await handshakes.all_done.wait()
    connected.put(count)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    served = sum(1 for result in results if result is True)
    return {"served": served, "connected": handshakes.opened, "delays": delays}


def client_process(
    url: str, count: int, lines: int, connected: Queue[Any], results: Queue[Any], sample: int
) -> None:
    results.put(asyncio.run(_clients(url, count, lines, connected, sample)))


def run_level(stack: BenchStack, viewers: int, lines: int, rate: float, procs: int) -> LevelResult:
    pipeline_id = stack.new_pipeline()
    ctx = multiprocessing.get_context("spawn")
    connected: Queue[Any] = ctx.Queue()
    results: Queue[Any] = ctx.Queue()
    shares = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
    shares = [share for share in shares if share]
    # Sample delays so that bookkeeping in the clients stays small at thousands of viewers.
    sample = max(1, (viewers * lines) // 20000)
    workers = [
        ctx.Process(
            target=client_process,
            args=(stack.log_socket(pipeline_id), share, lines, connected, results, sample),
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        connected.get(timeout=300)
    time.sleep(1.0 + viewers / 2000)  # handshakes done; let the server register them all
    started = time.perf_counter()
    publisher = LogPublisher(redis.Redis.from_url(stack.redis_url), pipeline_id)
    publish = threading.Thread(target=_publish, args=(publisher, lines, rate))
    publish.start()
    gathered = [results.get(timeout=600) for _ in workers]
    seconds = time.perf_counter() - started
    publish.join()
    for worker in workers:
        worker.join()
    return LevelResult(
        viewers=viewers,
        connected=sum(r["connected"] for r in gathered),
        served=sum(r["served"] for r in gathered),
        delays_ms=[d for r in gathered for d in r["delays"]],
        seconds=seconds,
    )


def _publish(publisher: LogPublisher, lines: int, rate: float) -> None:
    start = time.perf_counter()
    for i in range(lines):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publisher.publish(f"line {i} " + "x" * 80, phase="execute", stream="stdout")
    publisher.publish("pipeline success", stream="status", status="success")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,100,500,1000,2000", help="viewer counts")
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="lines per second")
    parser.add_argument("--client-processes", type=int, default=2)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    print(f"{args.lines} lines at {args.rate:g}/s per level; one backend process")
    print(
        f"{'viewers':>8} {'connected':>10} {'served':>8} {'p50 ms':>10} {'p95 ms':>10} "
        f"{'max ms':>10} {'seconds':>9}"
    )
    held = 0
    with BenchStack() as stack:
        for viewers in levels:
            procs = min(args.client_processes, viewers)
            result = run_level(stack, viewers, args.lines, args.rate, procs)
            print(result.row(), flush=True)
            if result.served < viewers:
                break
            held = viewers
    print(f"one backend process held {held} concurrent viewers with every line delivered")


if __name__ == "__main__":
    main()
