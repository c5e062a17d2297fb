"""How code from a pushed repository is contained: the bubblewrap command line around it.

A notebook is code from whoever can push to a registered repository. Everything that runs it
(the notebook kernel, the child that unpickles the exported model) starts through `wrap()`:

- bubblewrap gives it its own PID, IPC, UTS and (KERNEL_NETWORK=none) network namespaces:
  no other process is visible in /proc, and not even the platform's loopback services answer;
- the whole system (the Python environment included) is mounted read-only; MLOPS_HOME (keys,
  database, logs), the work root (other pipelines' folders), /tmp and /dev/shm are replaced
  by empty private tmpfs; only the pipeline's own work folder is bound writable;
- `prlimit` sets the resource limits, then `setpriv` switches to an unprivileged uid/gid of
  its own (never the worker's), drops every capability and sets no_new_privs;
- bubblewrap runs as root without a user namespace, on purpose: a user namespace would map
  the sandbox's uid to the worker's own uid outside, and the code could read the worker's
  files as their owner.

The sandbox dies with the worker (--die-with-parent), and when its first process exits the
PID namespace takes every process it started with it: nothing it forks outlives it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from pydantic import ByteSize

from mlops_core.settings import Settings
from mlops_core.task_queue import SANDBOX_OFF_STATE

REQUIRED_PROGRAMS = ("bwrap", "prlimit", "setpriv")
# A uid per worker process: limits on processes count per uid, and signals cross only
# within one uid, so two pipelines running at once never share one.
UID_SPAN = 100_000
# Seconds of CPU between the soft limit (SIGXCPU: the kernel raises a named error) and the
# hard one (SIGKILL), for code stuck in C that never returns to Python.
CPU_GRACE_SECONDS = 10
# The sandbox's own scratch space: private, empty, writable by it, of bounded size.
SCRATCH_DIRS = (Path("/tmp"), Path("/dev/shm"))
# Paths a sandbox never needs that can hold credentials of the host or of its containers.
HOST_SECRET_DIRS = ("/run/secrets", "/var/run/secrets")


class SandboxUnavailable(Exception):
    """The sandbox cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Isolation:
    """What contains repository code in this worker, as logged at start and shown by /ready."""

    enabled: bool
    description: str


def sandbox_uid(settings: Settings) -> int:
    """The uid (and gid) this worker process's sandboxes run as."""
    return settings.kernel_uid_base + os.getpid() % UID_SPAN


def check_available(settings: Settings) -> Isolation:
    """Whether the sandbox can run; raises SandboxUnavailable (with the fix) when it cannot."""
    if settings.kernel_sandbox == "off":
        return Isolation(False, SANDBOX_OFF_STATE)
    missing = [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None]
    if missing:
        raise SandboxUnavailable(
            f"the kernel sandbox needs {', '.join(missing)} (Debian: apt-get install "
            "bubblewrap util-linux); install it, or set KERNEL_SANDBOX=off to run notebooks "
            "unconfined"
        )
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "the kernel sandbox runs notebooks under a uid of their own, which needs a worker "
            "running as root (in a container: root with CAP_SYS_ADMIN and CAP_SETUID); run the "
            "worker as root, or set KERNEL_SANDBOX=off to run notebooks unconfined"
        )
    probe = subprocess.run(
        wrap(settings, ["true"], work_dir=None, cwd=Path("/")),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create the sandbox here: {probe.stderr.strip() or probe.returncode}"
            " (in a container it needs CAP_SYS_ADMIN and an unconfined seccomp/AppArmor "
            "profile; see README.md, 'the kernel sandbox'), or set KERNEL_SANDBOX=off"
        )
    return Isolation(True, describe(settings))


def ensure_available(settings: Settings) -> Isolation:
    """check_available, probed once per process while it succeeds (a refusal is re-checked:
    installing bubblewrap takes effect without restarting the worker)."""
    key = (settings.kernel_sandbox, settings.kernel_network)
    if key not in _available:
        _available[key] = check_available(settings)
    return _available[key]


_available: dict[tuple[str, str], Isolation] = {}


def describe(settings: Settings) -> str:
    """One line naming the isolation and its limits."""
    network = "no network" if settings.kernel_network == "none" else "host network (egress)"
    return (
        f"bubblewrap: a uid of its own (from KERNEL_UID_BASE={settings.kernel_uid_base}), "
        f"own PID/IPC namespaces, {network}, "
        f"read-only system, MLOPS_HOME hidden; limits: memory "
        f"{_size(settings.kernel_memory_limit)}, CPU {settings.kernel_cpu_seconds} s, "
        f"{settings.kernel_max_processes} processes, files up to "
        f"{_size(settings.kernel_max_file_size)}"
    )


def limit_exceeded(settings: Settings, message: str) -> str | None:
    """The limit a sandboxed kernel's error means it hit, named with its setting, if any.

    Each limit shows up in Python as an ordinary error: an allocation past the address-space
    limit is a MemoryError, a fork past the process limit fails with EAGAIN, a write past the
    file-size limit with EFBIG (Python ignores SIGXFSZ). CPU time is named by the kernel
    itself (mlops_core/kernel_startup.py turns SIGXCPU into an error).
    """
    if settings.kernel_sandbox == "off":
        return None
    if message.startswith("MemoryError"):
        size = _size(settings.kernel_memory_limit)
        return f"kernel exceeded its {size} memory limit (KERNEL_MEMORY_LIMIT)"
    if "[Errno 11] Resource temporarily unavailable" in message:
        count = settings.kernel_max_processes
        return f"kernel exceeded its limit of {count} processes (KERNEL_MAX_PROCESSES)"
    if "[Errno 27] File too large" in message:
        size = _size(settings.kernel_max_file_size)
        return f"kernel exceeded its {size} file size limit (KERNEL_MAX_FILE_SIZE)"
    return None


# What a name lookup or a connection says in a kernel without network (urllib, requests, socket).
_NO_NETWORK_ERRORS = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "No address associated with hostname",
    "Network is unreachable",
)


def no_network_hint(settings: Settings, message: str) -> str | None:
    """What to do about a kernel error that is a download the sandbox's missing network stopped.

    Real notebooks download their data (seaborn's `load_dataset`, scikit-learn's `fetch_*`,
    `pd.read_csv("https://...")`); without network the error is a bare name-resolution failure
    that does not say the platform cut the network on purpose, nor what to do instead.
    """
    if settings.kernel_sandbox == "off" or settings.kernel_network != "none":
        return None
    if not any(error in message for error in _NO_NETWORK_ERRORS):
        return None
    return (
        "the kernel has no network (KERNEL_NETWORK=none): commit the data file beside the "
        "notebook and read it from there, the notebook's folder being the working directory "
        "(scikit-learn's load_* data sets ship with it; seaborn's load_dataset and "
        "scikit-learn's fetch_* download theirs)"
    )


def _size(value: ByteSize) -> str:
    return value.human_readable(separator=" ").replace(".0 ", " ")


def open_written(path: Path) -> IO[bytes] | None:
    """A file the sandbox wrote, opened for the worker to read; None unless a plain file.

    The sandbox may have replaced it with a link to a file of the worker's (which the worker
    would read with its own rights) or with a FIFO (which would block the worker forever).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    stream = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        stream.close()
        return None
    return stream


def prepare_work_dir(settings: Settings, work_dir: Path) -> None:
    """Give the pipeline's work folder to the sandbox's uid: the only place it may write."""
    if settings.kernel_sandbox == "off":
        return
    uid = sandbox_uid(settings)
    os.chown(work_dir, uid, uid)
    for root, dirs, files in os.walk(work_dir):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


def wrap(
    settings: Settings,
    command: Sequence[str],
    *,
    work_dir: Path | None,
    cwd: Path,
    long_lived: bool = False,
    network: Literal["none", "egress"] | None = None,
    read_only: Sequence[Path] = (),
) -> list[str]:
    """`command` as run inside the sandbox (unchanged when KERNEL_SANDBOX=off).

    The caller starts the result with the kernel's allow-listed environment, which bubblewrap
    passes on; only file descriptors the caller passes explicitly are inherited.

    `long_lived`: a model server's model process, which lives as long as its version serves.
    It has no CPU-time limit (it would end a healthy server after an hour of predictions), no
    network whatever KERNEL_NETWORK says (it needs none: the server downloads the model), and
    its folder is read-only (it writes nothing).

    `network`: overrides KERNEL_NETWORK for one command that runs only the platform's code with
    arguments the platform chose (pip installing a notebook's requirements needs the index).

    `read_only`: folders bound read-only even where the sandbox hides their surroundings (the
    cached environment of the notebook's requirements.txt, inside REQUIREMENTS_CACHE_DIR).
    """
    if settings.kernel_sandbox == "off":
        return list(command)
    uid = str(sandbox_uid(settings))
    namespaces = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if (network or settings.kernel_network) == "none" or long_lived:
        namespaces.append("--unshare-net")
    cpu = settings.kernel_cpu_seconds
    limits = [
        f"--as={int(settings.kernel_memory_limit)}",
        *([] if long_lived else [f"--cpu={cpu}:{cpu + CPU_GRACE_SECONDS}"]),
        f"--nproc={settings.kernel_max_processes}",
        f"--fsize={int(settings.kernel_max_file_size)}",
    ]
    return [
        "bwrap",
        *("--ro-bind", "/", "/"),
        *("--dev", "/dev"),
        *("--proc", "/proc"),
        *mount_plan(settings, work_dir, writable=not long_lived, read_only=read_only),
        *namespaces,
        "--die-with-parent",
        "--new-session",
        *("--chdir", str(cwd)),
        "--",
        "prlimit",
        *limits,
        "--",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
        *command,
    ]


def mount_plan(
    settings: Settings,
    work_dir: Path | None,
    *,
    writable: bool = True,
    read_only: Sequence[Path] = (),
) -> list[str]:
    """bubblewrap mount options over the read-only root: what is hidden, what is bound.

    Mounts are applied shallowest first, so a path bound back inside a hidden one (the Python
    environment in a checkout under /tmp, the work folder inside MLOPS_HOME) reappears, and
    a secret inside a bound path (MLOPS_HOME inside the checkout) disappears again.
    """
    mounts: dict[Path, str] = {}
    for hidden in (*SCRATCH_DIRS, *map(Path, HOST_SECRET_DIRS)):
        if hidden.is_dir():
            mounts[hidden] = "tmpfs"
    # The worker's own HOME (~/.netrc, ~/.git-credentials, cloud credentials) goes too, and the
    # cache of requirements environments (only the one a command is given is bound back).
    hidden_dirs = (
        settings.mlops_home,
        settings.work_dir,
        Path.home(),
        settings.requirements_cache_dir,
    )
    for hidden in hidden_dirs:
        if hidden is not None and hidden.is_dir() and hidden.resolve() != Path("/"):
            mounts[hidden.resolve()] = "tmpfs"
    if work_dir is not None:
        mounts[work_dir.resolve().parent] = "tmpfs"  # other pipelines' (or models') folders
        mounts[work_dir.resolve()] = "bind" if writable else "ro-bind"
    for folder in read_only:
        mounts.setdefault(folder.resolve(), "ro-bind")
    for needed in code_paths():
        if any(needed.is_relative_to(path) and path != needed for path in mounts):
            mounts.setdefault(needed, "ro-bind")
    env_file = Path(".env").resolve()
    if env_file.is_file():
        mounts[env_file] = "hide-file"

    options: list[str] = []
    for path in sorted(mounts, key=lambda p: len(p.parts)):
        kind = mounts[path]
        options += _parents(path, mounts)
        if kind == "tmpfs":
            if path in SCRATCH_DIRS:
                # Files there live in memory: cap them as the address space is capped.
                options += ["--perms", "1777", "--size", str(int(settings.kernel_memory_limit))]
            else:
                options += ["--perms", "0755"]
            options += ["--tmpfs", str(path)]
        elif kind == "bind":
            options += ["--bind", str(path), str(path)]
        elif kind == "ro-bind":
            options += ["--ro-bind", str(path), str(path)]
        else:
            options += ["--ro-bind", "/dev/null", str(path)]
    return options


def _parents(path: Path, mounts: dict[Path, str]) -> list[str]:
    """Directories to create (0755) between the nearest mounted ancestor and `path`.

    Under a tmpfs they do not exist; bubblewrap would create them 0700 (owned by root), and
    the sandbox's uid could not reach the folder bound below them.
    """
    ancestors = [a for a in path.parents if a in mounts]
    if not ancestors or mounts[ancestors[0]] != "tmpfs":
        return []
    created: list[str] = []
    for parent in reversed(path.parents):
        if parent.is_relative_to(ancestors[0]) and parent != ancestors[0]:
            created += ["--perms", "0755", "--dir", str(parent)]
    return created


def code_paths() -> list[Path]:
    """What the sandbox must read: the Python installation, its libraries and the platform."""
    paths = sorted(
        {
            Path(sys.prefix).resolve(),
            Path(sys.base_prefix).resolve(),
            Path(sys.executable).resolve().parent,
            Path(__file__).resolve().parents[1],
        }
    )
    return [p for p in paths if not any(p.is_relative_to(o) and p != o for o in paths)]
