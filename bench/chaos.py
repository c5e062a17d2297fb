"""Chaos: N pushes through a real stack while the worker, Redis, MLflow and a replica fail.

Run from the repository root, as root (the kernel sandbox needs it; --no-sandbox otherwise):

    .venv/bin/python -m bench.chaos                       # 30 pushes, 5-10 min on 2 cores
    .venv/bin/python -m bench.chaos --pushes 10 --gap 6   # a shorter run

It starts everything on free loopback ports in a temporary folder: Redis (no persistence, so a
restart loses every queued message, as a Redis replaced on another host would), MLflow, the
backend, one Celery worker and two model-server replicas behind the backend (MODEL_SERVER_URL
lists both). A local git repository is registered as a repo; each push commits a new notebook
and delivers a signed push webhook to the backend (GitHub waits 10 s for an answer and does not
retry by itself). A first push, not counted, gives the replicas a version to serve. Then, while
the pushes go out every --gap seconds and predictions go through the backend at --rate per
second (open loop), a schedule breaks one part at a time, each when it hurts, and waits until
the platform is whole again before the next:

- worker: `kill -9` of the Celery worker's main process (then of what it left) while a pipeline
  is in execute, started again 2 s later; whole again once the attempts it caught were queued
  again and the new worker claimed a pipeline;
- Redis: stopped while a pipeline is in deploy, started again (empty) --redis-down s later;
  whole again once the attempts it caught ended and every queued pipeline was back on the
  broker;
- MLflow: stopped while a pipeline is in register, started again --mlflow-down s later; whole
  again once the attempts it caught ended and the backend's models API answered;
- replica: `kill -9` of replica a under the prediction load, started again at once; whole again
  once it served the model.

It prints, for the counted pushes: deliveries accepted and lost (no 2xx within 10 s),
pipelines finished (by status) and stuck (not ended --drain s after the last push), duplicated
versions (a pipeline with more than one model version), predictions sent and failed (by
reason), and each fault's recovery time (from the fault until whole again, as above) with what
became of the pipelines it caught. Recovery settings are short (printed at the top) so that a
run takes minutes, not hours. The pushes come faster than one worker runs them, so the last
pipelines wait in a backlog: how long they take to end says nothing about recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nbformat
import redis
from cryptography.fernet import Fernet
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sqlalchemy import select

from bench.replica_failover import Replica
from mlops_core.database import session_scope, upgrade_database
from mlops_core.launch_commands import BACKEND_APP, uvicorn_command, worker_command
from mlops_core.model_registry import TAG_PIPELINE_ID
from mlops_core.schema import Pipeline, PipelinePhase
from mlops_core.states import Phase, PhaseStatus, PipelineStatus
from mlops_core.task_queue import waiting_pipeline_ids
from tests.support.github import delivery, push_payload
from tests.support.processes import ManagedProcess, free_port, wait_for, wait_http
from tests.support.services import MlflowServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "iris_classifier.ipynb"
NOTEBOOK_PATH = "train.ipynb"
ALIAS = "production"
GITHUB_TIMEOUT_SECONDS = 10.0
# How long a scheduled fault waits for its moment (a pipeline in the phase it hurts most).
MOMENT_WAIT_SECONDS = 30.0
# How long a fault's recovery is waited for before it counts as not recovered.
RECOVERY_BOUND_SECONDS = 300.0
ROW = {"data": [[5.1, 3.5, 1.4, 0.2]]}

# Short recovery settings, so that each fault is over in seconds (the defaults are minutes).
SETTINGS = {
    "PIPELINE_RECOVERY_SECONDS": "8",  # a dead worker's heartbeat is stale after 4 s
    "MAX_PIPELINE_ATTEMPTS": "3",
    "PIPELINE_TIMEOUT_SECONDS": "240",
    "MLFLOW_RETRY_SECONDS": "45",
    "DEPLOY_WAIT_SECONDS": "45",
    "REQUEUE_INTERVAL_SECONDS": "1",
    "MODEL_RECONCILE_INTERVAL_SECONDS": "3",
    "MODEL_HEARTBEAT_INTERVAL_SECONDS": "2",
    "REGISTRY_BREAKER_RESET_SECONDS": "3",
    "CELL_TIMEOUT_SECONDS": "120",
}


@dataclass
class Fault:
    """One scheduled fault, its times (wall clock) and the attempts it caught in flight.

    `back`: the broken part answers again. `recovered`: the platform is whole again by the
    fault's `criterion`, which the schedule waits for, so that faults never overlap.
    """

    name: str
    criterion: str
    detail: str = ""
    hit: float | None = None
    back: float | None = None
    recovered: float | None = None
    caught: dict[int, int] = field(default_factory=dict)  # pipeline id -> attempt


@dataclass
class Push:
    """One counted push: its delivery's answer."""

    sha: str
    sent: float
    status: int | None = None
    error: str | None = None
    latency: float = 0.0
    pipeline_id: int | None = None

    @property
    def lost(self) -> bool:
        return self.status is None or self.status >= 300


@dataclass
class Predictions:
    """Open-loop predictions through the backend: (sent at, latency, outcome) per request."""

    answers: list[tuple[float, float, str]] = field(default_factory=list)

    def failed(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        return Counter(o for at, _, o in self.answers if o != "ok" and start <= at < end)


class Stack:
    """The parts the schedule breaks, each restartable at the same address."""

    def __init__(self, work: Path, sandbox: bool, concurrency: int) -> None:
        self.work = work
        self.concurrency = concurrency
        (work / "redis").mkdir()
        self.redis = RedisServer(work / "redis")
        self.mlflow = MlflowServer(work / "mlflow")
        self.database_url = f"sqlite:///{work / 'mlops.db'}"
        self.env = {
            **SETTINGS,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
            "ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "ALLOW_LOCAL_REPOS": "true",
            "SERVING_ALIAS": ALIAS,
            "KERNEL_SANDBOX": "on" if sandbox else "off",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        self.replicas = [Replica(name, self.env, work) for name in ("replica-a", "replica-b")]
        self.env["MODEL_SERVER_URL"] = ",".join(r.url for r in self.replicas)
        self.backend: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self.url = ""
        self._workers_started = 0

    def start(self) -> None:
        self.redis.start()
        self.mlflow.start()
        upgrade_database(self.database_url)
        for replica in self.replicas:
            replica.start()
        port = free_port()
        home = self.work / "backend-home"
        self.backend = ManagedProcess(
            uvicorn_command(BACKEND_APP, port, log_level="warning"),
            env={**self.env, "MLOPS_HOME": str(home)},
            log_path=self.work / "backend.log",
            cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/health", 120, self.backend)
        self.start_worker()

    def start_worker(self) -> None:
        """A new worker process (a new node name: a restarted host comes back as a new node)."""
        self._workers_started += 1
        n = self._workers_started
        home = self.work / "worker-home"
        home.mkdir(exist_ok=True)
        worker = ManagedProcess(
            worker_command(concurrency=self.concurrency, node_name=f"chaos-{n}@%h"),
            env={**self.env, "MLOPS_HOME": str(home)},
            log_path=self.work / f"worker-{n}.log",
            cwd=home,
        )
        self.worker = worker
        wait_for(lambda: " ready." in worker.log_text(), 120, 0.2, "celery worker ready")

    def kill_worker(self) -> None:
        """`kill -9` of the main process; a moment later, of whatever it left behind."""
        assert self.worker is not None
        os.kill(self.worker.pid, signal.SIGKILL)
        time.sleep(1)
        self.worker.kill()
        self.worker.stop()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker.stop()
        if self.backend is not None:
            self.backend.stop()
        for replica in self.replicas:
            replica.stop()
        self.mlflow.stop()
        self.redis.stop()


class Repository:
    """A local git repository standing in for GitHub, registered with the backend."""

    def __init__(self, path: Path, model_name: str) -> None:
        self.path = path
        self.model_name = model_name
        self.url = path.as_uri()
        self.secret = ""
        self.head = "0" * 40
        path.mkdir()
        self._git("init", "--quiet", "--initial-branch", "main")

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), "-c", "user.name=chaos", "-c", "user.email=c@example.com",
             *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    def register(self, client: httpx.Client) -> None:
        answer = client.post(
            "/repos",
            json={"github_url": self.url, "notebook_path": NOTEBOOK_PATH, "create_webhook": False},
        )
        answer.raise_for_status()
        self.secret = answer.json()["webhook_secret"]

    def commit(self, index: int) -> str:
        """Commit the notebook with a new VERSION (and a smaller forest, for speed)."""
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        for cell in notebook.cells:
            if "mlops:config" in cell.metadata.get("tags", []):
                cell.source = (
                    cell.source.replace('"iris-classifier"', f'"{self.model_name}"')
                    .replace('VERSION = "1.0.0"', f'VERSION = "1.0.{index}"')
                    .replace("N_ESTIMATORS = 100", "N_ESTIMATORS = 20")
                )
        nbformat.write(notebook, self.path / NOTEBOOK_PATH)
        self._git("add", "--all")
        self._git("commit", "--quiet", "-m", f"push {index}")
        return self._git("rev-parse", "HEAD")

    def push(self, client: httpx.Client, index: int) -> Push:
        """Commit and deliver the push webhook, as GitHub would (10 s, no retry)."""
        before, sha = self.head, self.commit(index)
        self.head = sha
        item = delivery(
            push_payload(self.url, after=sha, before=before, modified=[NOTEBOOK_PATH]), self.secret
        )
        push = Push(sha=sha, sent=time.time())
        try:
            answer = client.post(
                "/webhook/github",
                content=item.body,
                headers=item.headers,
                timeout=GITHUB_TIMEOUT_SECONDS,
            )
            push.status = answer.status_code
            if answer.status_code == 202:
                push.pipeline_id = answer.json()["pipeline_id"]
        except httpx.HTTPError as exc:
            push.error = type(exc).__name__
        push.latency = time.time() - push.sent
        return push


def pipeline_in(database_url: str, phase: Phase) -> int | None:
    """A pipeline whose `phase` is running now, if any."""
    with session_scope(database_url) as session:
        return session.scalar(
            select(PipelinePhase.pipeline_id).where(
                PipelinePhase.name == phase.value, PipelinePhase.status == PhaseStatus.RUNNING
            )
        )


def at_moment(database_url: str, phase: Phase) -> str:
    """Wait (bounded) until a pipeline is in `phase`; say which, or that none came."""
    try:
        found = wait_for(lambda: pipeline_in(database_url, phase), MOMENT_WAIT_SECONDS, 0.05)
    except TimeoutError:
        return f"no pipeline reached {phase} within {MOMENT_WAIT_SECONDS:g} s"
    return f"pipeline {found} in {phase}"


def running_attempts(database_url: str) -> dict[int, int]:
    """Pipeline id -> attempt, for every running pipeline."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Pipeline.id, Pipeline.attempts).where(Pipeline.status == PipelineStatus.RUNNING)
        )
        return {pipeline_id: attempt for pipeline_id, attempt in rows}


def settled(database_url: str, caught: dict[int, int]) -> bool:
    """No caught attempt still holds its pipeline: each ended, or was queued again."""
    return not running_attempts(database_url).items() & caught.items()


def naive_utc(moment: float) -> datetime:
    """A wall-clock time as the database stores it (SQLite keeps no zone; all are UTC)."""
    return datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)


def claimed_since(database_url: str, moment: float) -> bool:
    """A worker claimed a pipeline after `moment` (a claim starts the fetch phase)."""
    with session_scope(database_url) as session:
        found = session.scalar(
            select(PipelinePhase.id)
            .where(
                PipelinePhase.name == Phase.FETCH.value,
                PipelinePhase.started_at >= naive_utc(moment),
            )
            .limit(1)
        )
    return found is not None


def unsent(database_url: str, redis_url: str, before: float) -> set[int]:
    """Pipelines queued since before `before` whose message is not on the broker."""
    client = redis.Redis.from_url(redis_url)
    try:
        waiting = waiting_pipeline_ids(client)
    finally:
        client.close()
    with session_scope(database_url) as session:
        queued = session.scalars(
            select(Pipeline.id).where(
                Pipeline.status == PipelineStatus.QUEUED,
                Pipeline.created_at < naive_utc(before),
            )
        ).all()
    return set(queued) - waiting


def recover(fault: Fault, whole: Callable[[], bool]) -> None:
    """Wait until the platform is whole again (`whole`), bounded; record when."""
    try:
        wait_for(whole, RECOVERY_BOUND_SECONDS, 0.1, fault.criterion)
    except TimeoutError:
        return
    fault.recovered = time.time()


def schedule(
    stack: Stack, args: argparse.Namespace, model: str
) -> list[tuple[float, Fault, Callable[[Fault], None]]]:
    """(seconds after the first counted push, fault, action) for each fault, in order."""
    window = args.pushes * args.gap
    url = stack.database_url
    a = stack.replicas[0]

    def break_at(fault: Fault, phase: Phase) -> None:
        fault.detail = at_moment(url, phase)
        fault.hit = time.time()
        fault.caught = running_attempts(url)

    def worker(fault: Fault) -> None:
        break_at(fault, Phase.EXECUTE)
        stack.kill_worker()
        time.sleep(1)
        stack.start_worker()
        back = fault.back = time.time()
        recover(fault, lambda: settled(url, fault.caught) and claimed_since(url, back))

    def redis_down(fault: Fault) -> None:
        break_at(fault, Phase.DEPLOY)
        stack.redis.stop()
        time.sleep(args.redis_down)
        stack.redis.start()
        back = fault.back = time.time()
        recover(
            fault,
            lambda: settled(url, fault.caught) and not unsent(url, stack.redis.url, back),
        )

    def mlflow_down(fault: Fault) -> None:
        break_at(fault, Phase.REGISTER)
        stack.mlflow.stop()
        time.sleep(args.mlflow_down)
        stack.mlflow.start()
        fault.back = time.time()
        models = f"{stack.url}/models/{model}"
        recover(
            fault,
            lambda: settled(url, fault.caught) and httpx.get(models, timeout=5).is_success,
        )

    def replica(fault: Fault) -> None:
        fault.hit = time.time()
        fault.caught = running_attempts(url)
        fault.detail = "under the prediction load"
        a.kill()
        a.start()
        fault.back = time.time()
        recover(fault, lambda: served_by(a, model) is not None)

    return [
        (
            0.10 * window,
            Fault(
                "kill -9 worker",
                "the caught attempts were queued again and the new worker claimed a pipeline",
            ),
            worker,
        ),
        (
            0.35 * window,
            Fault(
                f"Redis down {args.redis_down:g} s",
                "the caught attempts ended and every queued pipeline was back on the broker",
            ),
            redis_down,
        ),
        (
            0.60 * window,
            Fault(
                f"MLflow down {args.mlflow_down:g} s",
                "the caught attempts ended and the backend's models API answered again",
            ),
            mlflow_down,
        ),
        (
            0.85 * window,
            Fault("kill -9 replica a", "the restarted replica served the model again"),
            replica,
        ),
    ]


def predict_until(url: str, model: str, rate: float, stop: threading.Event) -> Predictions:
    """Send predictions at `rate` per second until `stop` is set; wait for every answer."""
    result = Predictions()

    async def run() -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

            async def one(sent: float) -> None:
                try:
                    answer = await client.post(f"/models/{model}/predict", json=ROW)
                    outcome = "ok" if answer.status_code == 200 else f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                result.answers.append((sent, time.time() - sent, outcome))

            started = time.monotonic()
            tasks: list[asyncio.Task[None]] = []
            index = 0
            while not stop.is_set():
                await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(time.time())))
                index += 1
            await asyncio.gather(*tasks)

    asyncio.run(run())
    return result


def served_by(replica: Replica, model: str) -> str | None:
    """The version of `model` a replica serves (None: not loaded, or not answering)."""
    try:
        body = httpx.get(f"{replica.url}/models", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return next((str(m["version"]) for m in body["models"] if m["name"] == model), None)


def epoch(value: datetime | None) -> float | None:
    """A database timestamp (naive UTC on SQLite) as seconds since the epoch."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Outcome:
    """What became of one pipeline, read from the database after the run."""

    pipeline_id: int
    status: str
    error: str | None
    attempts: int
    finished: float | None


def outcomes(database_url: str, ids: list[int]) -> list[Outcome]:
    with session_scope(database_url) as session:
        rows = session.scalars(select(Pipeline).where(Pipeline.id.in_(ids))).all()
        return [Outcome(p.id, p.status, p.error, p.attempts, epoch(p.finished_at)) for p in rows]


def run(args: argparse.Namespace, work: Path) -> None:
    stack = Stack(work, sandbox=not args.no_sandbox, concurrency=args.concurrency)
    model = f"chaos-iris-{uuid.uuid4().hex[:6]}"
    print(
        f"chaos: {args.pushes} pushes every {args.gap:g} s, {args.rate:g} predictions/s through "
        f"the backend, 2 replicas, 1 worker (concurrency {args.concurrency}), "
        f"KERNEL_SANDBOX={stack.env['KERNEL_SANDBOX']}",
        flush=True,
    )
    print("settings: " + " ".join(f"{k}={v}" for k, v in SETTINGS.items()), flush=True)
    try:
        stack.start()
        client = httpx.Client(base_url=stack.url, timeout=30)
        repo = Repository(work / "repo", model)
        repo.register(client)

        warm = repo.push(client, 0)
        assert warm.pipeline_id is not None, warm
        wait_for(
            lambda: all(served_by(r, model) for r in stack.replicas),
            300,
            0.5,
            "the first version served by both replicas",
        )
        print(f"warm-up: pipeline {warm.pipeline_id} deployed; chaos starts", flush=True)

        stop = threading.Event()
        predictions: list[Predictions] = []
        predictor = threading.Thread(
            target=lambda: predictions.append(predict_until(stack.url, model, args.rate, stop))
        )
        predictor.start()
        started = time.time()
        plan = schedule(stack, args, model)

        def run_faults() -> None:
            for at, fault, action in plan:
                time.sleep(max(0.0, started + at - time.time()))
                action(fault)
                hit = fault.hit or 0.0
                took = "not" if fault.recovered is None else f"{fault.recovered - hit:.1f} s"
                print(
                    f"{hit - started:6.1f}s  {fault.name} ({fault.detail}); back after "
                    f"{(fault.back or hit) - hit:.1f} s, whole again after {took}",
                    flush=True,
                )

        faults = threading.Thread(target=run_faults)
        faults.start()
        pushes: list[Push] = []
        for index in range(1, args.pushes + 1):
            time.sleep(max(0.0, started + (index - 1) * args.gap - time.time()))
            pushes.append(repo.push(client, index))
        faults.join()
        last_push = time.time()

        ids = [p.pipeline_id for p in pushes if p.pipeline_id is not None]

        def all_ended() -> bool:
            return all(o.finished is not None for o in outcomes(stack.database_url, ids))

        with contextlib.suppress(TimeoutError):  # what has not ended by then is stuck
            wait_for(all_ended, args.drain, 1.0, "every pipeline to end")
        drained = time.time() - last_push
        stop.set()
        predictor.join()

        ended = outcomes(stack.database_url, ids)
        versions = MlflowClient(stack.mlflow.uri).search_model_versions(f"name='{model}'")
        report(pushes, ended, versions, predictions[0], plan, drained)
        client.close()
    finally:
        stack.stop()


def report(
    pushes: list[Push],
    ended: list[Outcome],
    versions: list[ModelVersion],
    predictions: Predictions,
    plan: list[tuple[float, Fault, Callable[[Fault], None]]],
    drained: float,
) -> None:
    accepted = [p for p in pushes if p.status == 202]
    lost = [p for p in pushes if p.lost]
    finished = [o for o in ended if o.finished is not None]
    stuck = [o for o in ended if o.finished is None]
    missing = len(accepted) - len(ended)  # accepted, yet no pipeline row
    per_pipeline = Counter(v.tags.get(TAG_PIPELINE_ID) for v in versions)
    duplicated = {pid: n for pid, n in per_pipeline.items() if n > 1}
    slowest = max((p.latency for p in pushes), default=0.0)
    print()
    print(
        f"deliveries: {len(pushes)} sent, {len(accepted)} accepted, {len(lost)} lost "
        f"(no 2xx within {GITHUB_TIMEOUT_SECONDS:g} s), slowest answer {slowest:.2f} s"
        + (f"; lost: {[(p.status, p.error) for p in lost]}" if lost else "")
    )
    print(
        f"pipelines: {len(finished)} finished {dict(Counter(o.status for o in finished))}, "
        f"{len(stuck)} stuck, {missing} accepted without a row; "
        f"attempts {dict(sorted(Counter(o.attempts for o in ended).items()))}; "
        + (
            f"still not ended {drained:.0f} s after the last push"
            if stuck
            else f"all ended {drained:.0f} s after the last push"
        )
    )
    for error, count in Counter(o.error for o in finished if o.error).items():
        print(f"  failed x{count}: {error}")
    for o in stuck:
        print(f"  stuck: pipeline {o.pipeline_id} {o.status} (attempts {o.attempts})")
    print(
        f"model versions: {len(versions)} for {len(per_pipeline)} pipelines (warm-up included), "
        f"duplicated versions: {sum(n - 1 for n in duplicated.values())}"
        + (f" {duplicated}" if duplicated else "")
    )
    failed = predictions.failed()
    total = len(predictions.answers)
    latencies = sorted(latency for _, latency, _ in predictions.answers) or [0.0]
    p99 = latencies[max(0, round(0.99 * total) - 1)]
    print(
        f"predictions through the backend: {total} sent, {sum(failed.values())} failed "
        f"{dict(failed)}; p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    print("recovery (from the fault until the platform was whole again):")
    outcome = {o.pipeline_id: o for o in ended}
    for _, fault, _ in plan:
        hit = fault.hit or 0.0
        end = fault.recovered or time.time()
        shown = "not recovered" if fault.recovered is None else f"{end - hit:.1f} s"
        caught = ", ".join(
            f"{pid} (attempt {attempt}) -> {outcome[pid].status} after "
            f"{outcome[pid].attempts} attempt(s)"
            if pid in outcome
            else f"{pid} (attempt {attempt}, warm-up)"
            for pid, attempt in sorted(fault.caught.items())
        )
        print(
            f"  {fault.name:<18} {shown:>13}  when {fault.criterion}; {fault.detail}; "
            f"caught in flight: {caught or 'none'}; failed predictions meanwhile: "
            f"{sum(predictions.failed(hit, end + 1).values())}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between pushes")
    parser.add_argument("--rate", type=float, default=10.0, help="predictions per second")
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's processes")
    parser.add_argument("--redis-down", type=float, default=10.0)
    parser.add_argument("--mlflow-down", type=float, default=15.0)
    parser.add_argument("--drain", type=float, default=420.0, help="bound for the last pipelines")
    parser.add_argument("--no-sandbox", action="store_true", help="KERNEL_SANDBOX=off")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    try:
        run(args, work)
    finally:
        if args.keep:
            print(f"logs and databases kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
