"""The kernel sandbox, tried as an attacker would: a hostile notebook through the real worker.

The notebook below does what a malicious push would: read every process's environment and
command line, the encryption key, the env file and the database; list other pipelines'
folders; connect to the platform's Redis, MLflow, backend and database ports; move another
model's serving alias; write outside its folder. Each attempt prints one JSON line; the test
reads them back from the pipeline's log and checks the stores afterwards.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_core.database import upgrade_database
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.pipeline.conftest import (
    WORKER_SECRETS,
    WorkerGroup,
    create_pipeline,
    log_events,
    redis_db_url,
    small_notebook,
    start_worker,
    unique_model_name,
    wait_finished,
)

ENV_FILE_SECRET = "env-file-secret-value-31337"

HOSTILE_CELL = """
import glob, json, os, socket
def attempt(name, action):
    try:
        detail = action()
        print("ATTEMPT " + json.dumps({"name": name, "ok": True, "detail": str(detail)[:2000]}))
    except BaseException as exc:
        print("ATTEMPT " + json.dumps({"name": name, "ok": False, "detail": repr(exc)[:300]}))

def read_all(pattern):
    found = {}
    for path in glob.glob(pattern):
        try:
            content = open(path, "rb").read()
        except OSError:
            continue
        if content and not path.startswith("/proc/self") and "/proc/%d/" % os.getpid() not in path:
            found[path] = content.decode("latin-1")
    if not found:
        raise PermissionError("nothing readable")
    return found

def platform_environ():
    found = read_all("/proc/[0-9]*/environ")
    names = ("REDIS_URL", "API_TOKEN", "ENCRYPTION_KEY", "DATABASE_URL", "GITHUB_TOKEN")
    leaked = {p: c for p, c in found.items() if any(n in c for n in names)}
    if leaked:
        return leaked
    raise PermissionError("no platform environment readable")

def other_pipelines():
    mine = os.path.basename(os.path.dirname(os.path.dirname(MODEL_OUTPUT_PATH)))
    others = [d for d in os.listdir(WORK_ROOT) if d != mine]
    if others:
        return others
    raise PermissionError("only this pipeline's folder")

def others_cmdline():
    found = read_all("/proc/[0-9]*/cmdline")
    mine = {str(os.getpid()), str(os.getppid())}
    foreign = {p: c for p, c in found.items() if p.split("/")[2] not in mine}
    leaked = {p: c for p, c in foreign.items() if "celery" in c or "uvicorn" in c or "redis" in c}
    if leaked:
        return leaked
    raise PermissionError("only sandbox processes visible: %s" % sorted(foreign))

def connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return "connected"

def write(path):
    with open(path, "w") as stream:
        stream.write("pwned")
    return path

def move_alias():
    from mlflow import MlflowClient
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"
    MlflowClient(MLFLOW_URL).set_registered_model_alias(VICTIM, "production", "1")
    return "alias moved"

def forge_runner_events():
    runner = os.getppid()  # the papermill runner: same uid, holds the events pipe
    for fd in os.listdir("/proc/%d/fd" % runner):
        event = {"type": "output", "index": 0, "stream": "status", "text": "forged"}
        with open("/proc/%d/fd/%s" % (runner, fd), "w") as stream:
            stream.write(json.dumps(event) + "\\n")
    return "wrote to the runner's files"

attempt("environ of other processes", platform_environ)
attempt("forge the runner's events", forge_runner_events)
attempt("cmdline of platform processes", others_cmdline)
attempt("encryption key", lambda: open(KEY_FILE).read())
attempt("env file", lambda: open(ENV_FILE).read())
attempt("database", lambda: open(DATABASE_FILE, "rb").read(100))
attempt("other pipelines", other_pipelines)
attempt("worker home", lambda: read_all(os.path.expanduser("~root") + "/.*"))
attempt("redis", lambda: connect(REDIS_PORT))
attempt("mlflow", lambda: connect(MLFLOW_PORT))
attempt("backend", lambda: connect(BACKEND_PORT))
attempt("database port", lambda: connect(5432))
attempt("move an alias", move_alias)
attempt("write in MLOPS_HOME", lambda: write(os.path.join(MLOPS_HOME, "pwned")))
attempt("write in the project", lambda: write(os.path.join(PROJECT, "pwned")))
attempt("write in the worker's tmp", lambda: write(HOST_TMP_FILE))
attempt("kill the worker", lambda: os.kill(1, 9) or "killed pid 1")
"""


@pytest.fixture(scope="module")
def sandbox_worker(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, mlflow_uri: str
) -> Iterator[WorkerGroup]:
    """A worker with small kernel limits, so each limit can be hit quickly (the hostile
    notebook runs on the shared worker: its attempts import MLflow, past 12 s of CPU)."""
    tmp = tmp_path_factory.mktemp("sandbox-worker")
    database_url = f"sqlite:///{tmp / 'mlops.db'}"
    upgrade_database(database_url)
    group = start_worker(
        tmp,
        redis_url=redis_db_url(redis_url, 9),
        database_url=database_url,
        mlflow_uri=mlflow_uri,
        concurrency=2,
        extra_env={
            "AUTO_DEPLOY_ON_SUCCESS": "false",
            "PIPELINE_TIMEOUT_SECONDS": "300",
            "KERNEL_MEMORY_LIMIT": "2GiB",
            "KERNEL_MAX_PROCESSES": "64",
            "KERNEL_MAX_FILE_SIZE": "1MiB",
            "KERNEL_CPU_SECONDS": "12",
        },
        name="sandbox",
    )
    yield group
    group.stop()


def plant_secrets(group: WorkerGroup) -> Path:
    """What the local stack keeps in MLOPS_HOME (key, env file) and another pipeline's folder."""
    home = Path(group.env["MLOPS_HOME"])
    (home / "secrets").mkdir(exist_ok=True)
    (home / "secrets" / "encryption.key").write_text(TEST_ENCRYPTION_KEY)
    (home / "run").mkdir(exist_ok=True)
    (home / "run" / "platform-env.json").write_text(json.dumps({"API_TOKEN": ENV_FILE_SECRET}))
    (home / "work" / "pipeline-1").mkdir(parents=True, exist_ok=True)
    (home / "work" / "pipeline-1" / "other.txt").write_text("another pipeline's file")
    return home


def attempts(group: WorkerGroup, pipeline_id: int) -> dict[str, dict]:
    found = {}
    for event in log_events(group.redis_url, pipeline_id):
        for line in event.text.splitlines():
            if line.startswith("ATTEMPT "):
                record = json.loads(line.removeprefix("ATTEMPT "))
                found[record["name"]] = record
    return found


def test_a_hostile_notebook_reaches_no_secret_no_store_and_nothing_outside_its_folder(
    shared_worker: WorkerGroup, make_repo, tmp_path: Path, mlflow_uri: str
) -> None:
    client = MlflowClient(mlflow_uri)
    victim = unique_model_name("victim")
    client.create_registered_model(victim)
    home = plant_secrets(shared_worker)
    backend = socket.create_server(("127.0.0.1", 0))  # stands in for the backend's port
    host_tmp_file = tmp_path / "written-by-notebook"
    constants = {
        "KEY_FILE": str(home / "secrets" / "encryption.key"),
        "ENV_FILE": str(home / "run" / "platform-env.json"),
        "DATABASE_FILE": shared_worker.database_url.removeprefix("sqlite:///"),
        "WORK_ROOT": str(home / "work"),
        "MLOPS_HOME": str(home),
        "PROJECT": str(Path(__file__).resolve().parents[2]),
        "HOST_TMP_FILE": str(host_tmp_file),
        "REDIS_PORT": int(shared_worker.redis_url.rsplit(":", 1)[1].split("/")[0]),
        "MLFLOW_PORT": int(mlflow_uri.rsplit(":", 1)[1]),
        "MLFLOW_URL": mlflow_uri,
        "BACKEND_PORT": backend.getsockname()[1],
        "VICTIM": victim,
    }
    prelude = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    repo = make_repo()
    sha = repo.commit(
        {
            "train.ipynb": small_notebook(
                unique_model_name("hostile"), training=prelude + HOSTILE_CELL
            )
        }
    )
    try:
        pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
        shared_worker.send(pipeline_id)
        state = wait_finished(shared_worker.database_url, pipeline_id, timeout=240)
    finally:
        backend.close()

    log_text = "\n".join(e.text for e in log_events(shared_worker.redis_url, pipeline_id))
    assert state["status"] == "success", (state, log_text[-3000:])
    tried = attempts(shared_worker, pipeline_id)
    assert len(tried) == 17, sorted(tried)
    succeeded = {name: r["detail"] for name, r in tried.items() if r["ok"]}
    assert succeeded == {}, succeeded
    # Nothing the notebook printed, and nothing copied to MLflow, holds a secret.
    secrets = [*WORKER_SECRETS.values(), TEST_ENCRYPTION_KEY, ENV_FILE_SECRET]
    assert [s for s in secrets if s in log_text] == []
    run = client.get_run(state["mlflow_run_id"])
    assert [s for s in secrets if s in json.dumps(run.to_dictionary())] == []
    # The stores are as they were; nothing was written outside the work folder.
    assert client.get_registered_model(victim).aliases == {}
    assert not (home / "pwned").exists()
    assert not (Path(constants["PROJECT"]) / "pwned").exists()
    assert not host_tmp_file.exists()
    assert (home / "work" / "pipeline-1" / "other.txt").exists()


@pytest.mark.parametrize(
    ("cell", "error"),
    [
        (
            "blob = bytearray(3 * 1024 ** 3)",
            "kernel exceeded its 2 GiB memory limit (KERNEL_MEMORY_LIMIT)",
        ),
        (
            "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(60)\n"
            "        os._exit(0)",
            "kernel exceeded its limit of 64 processes (KERNEL_MAX_PROCESSES)",
        ),
        (
            "open('big.bin', 'wb').write(b'x' * 2 * 1024 ** 2)",
            "kernel exceeded its 1 MiB file size limit (KERNEL_MAX_FILE_SIZE)",
        ),
        (
            "while True:\n    pass",
            "kernel exceeded its CPU time limit of 12 s (KERNEL_CPU_SECONDS)",
        ),
    ],
    ids=["memory", "processes", "file-size", "cpu"],
)
def test_a_kernel_past_a_limit_fails_naming_the_limit(
    sandbox_worker: WorkerGroup, make_repo, cell: str, error: str
) -> None:
    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook(unique_model_name("limit"), training=cell)})
    pipeline_id = create_pipeline(sandbox_worker.database_url, repo, commit_sha=sha)
    sandbox_worker.send(pipeline_id)
    state = wait_finished(sandbox_worker.database_url, pipeline_id, timeout=240)
    assert state["status"] == "failed", state
    status, message = state["phases"]["execute"]
    assert status == "failed"
    assert error in message, message


def test_a_fifo_left_for_the_worker_does_not_block_it(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """The worker reads the checkout's notebook for a NameError hint: a FIFO there (or as the
    executed notebook) would block a plain open() forever."""
    cell = (
        "import os\nnotebook = os.path.join(os.getcwd(), 'train.ipynb')\nos.remove(notebook)\n"
        "os.mkfifo(notebook)\nundefined_name"
    )
    repo = make_repo()
    sha = repo.commit({"train.ipynb": small_notebook(unique_model_name("fifo"), training=cell)})
    pipeline_id = create_pipeline(shared_worker.database_url, repo, commit_sha=sha)
    shared_worker.send(pipeline_id)
    state = wait_finished(shared_worker.database_url, pipeline_id, timeout=240)
    assert state["status"] == "failed", state
    assert "NameError: name 'undefined_name' is not defined" in state["phases"]["execute"][1]
