"""The sandbox's pieces without a worker: the real bubblewrap around a probe, limit names,
and the clean-up of what a sandbox leaves for the worker to read."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from mlops_core import sandbox
from mlops_core.settings import Settings
from worker.local_tracking import remove_links

PROBE = """
import json, os, socket, sys
report = {"uid": os.getuid(), "gid": os.getgid(), "pids": sorted(
    int(p) for p in os.listdir("/proc") if p.isdigit())}
for name, path in [("key", KEY), ("work", WORK + "/out.txt"), ("system", "/etc/mlops-probe")]:
    try:
        if name == "key":
            open(path).read()
        else:
            open(path, "w").write("x")
        report[name] = "allowed"
    except OSError as exc:
        report[name] = type(exc).__name__
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2)
    report["network"] = "connected"
except OSError as exc:
    report["network"] = type(exc).__name__
report["home_listing"] = os.listdir(os.path.expanduser("~root"))
scratch = os.statvfs("/tmp")
report["tmp_bytes"] = scratch.f_blocks * scratch.f_frsize
print(json.dumps(report))
"""


def sandbox_settings(tmp_path: Path, **overrides: object) -> Settings:
    home = tmp_path / "mlops-home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "encryption.key").write_text("a-secret-key")
    return Settings(mlops_home=home, **overrides)  # type: ignore[arg-type]


needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not all(map(shutil.which, sandbox.REQUIRED_PROGRAMS)),
    reason="the sandbox needs root and bubblewrap",
)


@needs_sandbox
def test_a_sandboxed_process_runs_as_its_own_uid_seeing_only_its_folder(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path)
    work = settings.mlops_home / "work" / "pipeline-1"
    work.mkdir(parents=True)
    sandbox.prepare_work_dir(settings, work)
    listener = socket.create_server(("127.0.0.1", 0))
    code = (
        f"KEY = {str(settings.mlops_home / 'secrets' / 'encryption.key')!r}\n"
        f"WORK = {str(work)!r}\nPORT = {listener.getsockname()[1]}\n" + PROBE
    )
    try:
        done = subprocess.run(
            sandbox.wrap(settings, [sys.executable, "-c", code], work_dir=work, cwd=work),
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        listener.close()
    report = json.loads(done.stdout)
    assert report["uid"] == report["gid"] == sandbox.sandbox_uid(settings) != os.getuid()
    assert max(report["pids"]) < 10  # its own PID namespace: no worker, no other pipeline
    assert report["key"] == "FileNotFoundError"  # MLOPS_HOME is an empty tmpfs
    assert report["work"] == "allowed"
    assert (work / "out.txt").read_text() == "x"
    assert report["system"] in ("PermissionError", "OSError")
    assert report["network"] in ("ConnectionRefusedError", "OSError")  # not the host's port
    assert all(name in (".pyenv",) for name in report["home_listing"])  # only Python, re-bound
    assert report["tmp_bytes"] <= int(settings.kernel_memory_limit)  # /tmp lives in memory


@needs_sandbox
def test_egress_shares_the_host_network(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path, kernel_network="egress")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('ok')"
    try:
        done = subprocess.run(
            sandbox.wrap(settings, [sys.executable, "-c", code], work_dir=None, cwd=Path("/")),
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    assert done.stdout.strip() == "ok", done.stderr


@needs_sandbox
def test_one_command_gets_the_network_with_kernel_network_none_but_a_model_process_never(
    tmp_path: Path,
) -> None:
    """pip installing a notebook's requirements needs the index; nothing else gets a network."""
    settings = sandbox_settings(tmp_path)  # KERNEL_NETWORK=none
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('ok')"

    def connects(network: Literal["egress"] | None = None, long_lived: bool = False) -> bool:
        command = sandbox.wrap(
            settings,
            [sys.executable, "-c", code],
            work_dir=None,
            cwd=Path("/"),
            network=network,
            long_lived=long_lived,
        )
        done = subprocess.run(
            command,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() == "ok"

    try:
        assert connects(network="egress")
        assert not connects()
        assert not connects(network="egress", long_lived=True)
    finally:
        listener.close()


def test_off_runs_the_command_unchanged(tmp_path: Path) -> None:
    settings = Settings(mlops_home=tmp_path, kernel_sandbox="off")
    assert sandbox.wrap(settings, ["python", "-V"], work_dir=tmp_path, cwd=tmp_path) == [
        "python",
        "-V",
    ]
    assert not sandbox.check_available(settings).enabled


def test_without_bubblewrap_the_worker_refuses_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxUnavailable, match="KERNEL_SANDBOX=off"):
        sandbox.check_available(Settings(mlops_home=tmp_path))


@pytest.mark.parametrize(
    ("raised", "named"),
    [
        ("MemoryError: ", "kernel exceeded its 2 GiB memory limit (KERNEL_MEMORY_LIMIT)"),
        (
            "BlockingIOError: [Errno 11] Resource temporarily unavailable",
            "kernel exceeded its limit of 32 processes (KERNEL_MAX_PROCESSES)",
        ),
        (
            "OSError: [Errno 27] File too large",
            "kernel exceeded its 512 MiB file size limit (KERNEL_MAX_FILE_SIZE)",
        ),
        ("ValueError: the data is bad", None),
    ],
)
def test_errors_a_limit_causes_are_named_with_their_setting(raised: str, named: str | None) -> None:
    settings = Settings(
        kernel_memory_limit="2GiB", kernel_max_processes=32, kernel_max_file_size="512MiB"
    )
    assert sandbox.limit_exceeded(settings, raised) == named
    assert (
        sandbox.limit_exceeded(settings.model_copy(update={"kernel_sandbox": "off"}), raised)
        is None
    )


@pytest.mark.parametrize(
    "raised",
    [
        "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
        "ConnectionError: HTTPSConnectionPool(host='example.com', port=443): Max retries "
        "exceeded (Caused by NameResolutionError(\"Failed to resolve 'example.com' ([Errno -3] "
        'Temporary failure in name resolution)"))',
        "gaierror: [Errno -2] Name or service not known",
        "OSError: [Errno 101] Network is unreachable",
    ],
)
def test_a_download_the_missing_network_stopped_says_so_and_what_to_do(raised: str) -> None:
    """seaborn's load_dataset, scikit-learn's fetch_* and read_csv of a URL fail this way."""
    hint = sandbox.no_network_hint(Settings(), raised)
    assert hint is not None and hint.startswith("the kernel has no network (KERNEL_NETWORK=none)")
    assert "commit the data file beside the notebook" in hint
    for settings in (Settings(kernel_network="egress"), Settings(kernel_sandbox="off")):
        assert sandbox.no_network_hint(settings, raised) is None  # the network was not cut
    assert sandbox.no_network_hint(Settings(), "ValueError: the data is bad") is None


def test_links_and_special_files_left_by_a_sandbox_are_removed_before_reading(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "worker-secret"
    secret.write_text("key")
    store = tmp_path / "mlruns"
    (store / "0" / "run" / "artifacts").mkdir(parents=True)
    (store / "0" / "run" / "metrics.txt").write_text("1 0.9 0")
    (store / "0" / "run" / "artifacts" / "stolen").symlink_to(secret)
    (store / "0" / "linked-dir").symlink_to(tmp_path)
    os.link(secret, store / "0" / "hardlink")
    os.mkfifo(store / "0" / "pipe")

    removed = remove_links(store)

    assert sorted(removed) == ["0/hardlink", "0/linked-dir", "0/pipe", "0/run/artifacts/stolen"]
    assert (store / "0" / "run" / "metrics.txt").read_text() == "1 0.9 0"
    assert secret.read_text() == "key"
