"""A notebook's requirements.txt: read, checked against the kernel, and installed with pip.

The `environment` phase (worker/phases/environment.py) installs it on a miss of the cache of
environments (worker/environment_cache.py), which every later pipeline with the same file reuses.

The kernel ships the common data-science stack (pyproject.toml; README, "What a notebook can
import"); a notebook that needs more lists it in a requirements.txt beside it. Installing it
must not weaken what contains the notebook, nor change the kernel under other pipelines:

- pip runs inside the sandbox (its uid, no secret, MLOPS_HOME hidden), with network for this
  one step only (`sandbox.wrap(network="egress")`): no repository code runs in it, only pip
  with arguments the platform chose;
- requirements.txt may hold package names with versions and nothing else
  (mlops_core/notebook_requirements.py): no pip option, URL or path, so it cannot point pip
  at another index or at a source tree;
- `--only-binary=:all:`: wheels only, so no package's setup.py (code of whoever published
  it) runs at install time;
- `--prefix` into a folder of the pipeline's work folder: pip counts what the kernel's
  environment already has as installed and puts only the rest there; the folder then moves
  into the cache, out of the sandbox's reach (read-only for every kernel that uses it);
- a constraints file pins every package of the kernel's environment to its version, so a
  requirement that needs another numpy or scikit-learn fails naming the conflict instead of
  installing a second copy; and the folder is appended to the kernel's import path after its
  own packages, so nothing there can shadow them anyway;
- no pip cache: pip's own download cache would be writable by every pipeline's pip. The
  environments cache is written by the worker alone, only from a pip run that ran no code of
  the repository (worker/environment_cache.py).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlops_core import sandbox
from mlops_core.kernel_env import kernel_environment
from mlops_core.notebook_requirements import (
    MAX_REQUIREMENTS_BYTES,
    REQUIREMENTS_FILE,
    RequirementsError,
    installed_provider,
    parse_requirements,
)
from mlops_core.runner_process import kill_tree
from worker.phases.context import PhaseContext, PhaseFailed, PipelineCancelled

# The folder of the work folder pip installs into (its `prefix`) and runs in.
FOLDER = "environment"
ERROR_LINES = 8


def requirements_file(ctx: PhaseContext) -> Path | None:
    """The requirements.txt beside the notebook, when there is one."""
    if ctx.notebook_file is None:
        return None
    path = ctx.notebook_file.parent / REQUIREMENTS_FILE
    return path if path.exists() or path.is_symlink() else None


def read_requirements(path: Path) -> str:
    """The file's text; a link or anything but a small plain file is refused.

    The checkout is the pusher's: a requirements.txt linking to a file of the worker's must
    not be read with the worker's rights (its lines would end up in the pipeline's log).
    """
    stream = sandbox.open_written(path)
    if stream is None:
        raise PhaseFailed(f"{REQUIREMENTS_FILE} beside the notebook is not a plain file")
    with stream:
        data = stream.read(MAX_REQUIREMENTS_BYTES + 1)
    if len(data) > MAX_REQUIREMENTS_BYTES:
        raise PhaseFailed(
            f"{REQUIREMENTS_FILE} beside the notebook is larger than {MAX_REQUIREMENTS_BYTES} bytes"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PhaseFailed(f"{REQUIREMENTS_FILE} beside the notebook is not UTF-8 text") from None


def kernel_packages() -> dict[str, tuple[str, str]]:
    """Canonical name → (name, version) of every package in the kernel's environment.

    The worker runs on the kernel's interpreter and environment, so its own view is the
    kernel's; the first of two copies on the path is the one that imports.
    """
    found: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), (name, dist.version))
    return found


def to_install(ctx: PhaseContext, requirements: list[Requirement]) -> list[Requirement]:
    """The requirements the kernel does not satisfy; fail on one that asks to change it."""
    wanted: list[Requirement] = []
    conflicts: list[str] = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            ctx.log(f"{REQUIREMENTS_FILE}: `{requirement}` does not apply here (its marker)")
            continue
        # The worker runs on the kernel's interpreter and environment: what it has, the kernel has.
        provider = installed_provider(requirement.name)
        if provider is None:
            wanted.append(requirement)
            continue
        name, version = provider
        if not requirement.specifier.contains(version, prereleases=True):
            conflicts.append(f"`{requirement}` (the kernel has {name} {version})")
        elif requirement.extras and canonicalize_name(name) == canonicalize_name(requirement.name):
            wanted.append(requirement)  # pip adds the extras' own packages
        else:
            ctx.log(f"{REQUIREMENTS_FILE}: `{requirement}`: the kernel has {name} {version}")
    if conflicts:
        raise PhaseFailed(
            f"{REQUIREMENTS_FILE} asks for other versions of packages the kernel ships: "
            + ", ".join(conflicts)
            + "; a notebook cannot replace them (every pipeline shares them): remove the "
            "version from these lines or change the code for the kernel's versions "
            "(README, 'What a notebook can import')"
        )
    return wanted


def missing_requirements(ctx: PhaseContext, path: Path) -> tuple[str, list[Requirement]]:
    """The file's text and the requirements it lists that the kernel does not satisfy; fails
    naming every line that cannot be used."""
    text = read_requirements(path)
    try:
        requirements = parse_requirements(text)
    except RequirementsError as exc:
        for problem in exc.problems:
            ctx.log(f"{REQUIREMENTS_FILE}: {problem}", stream="error")
        raise PhaseFailed(str(exc)) from None
    return text, to_install(ctx, requirements)


def install(ctx: PhaseContext, wanted: list[Requirement]) -> Path:
    """Install `wanted` with pip, in the sandbox, into a folder of the work folder; return pip's
    prefix folder (the packages are in its lib/pythonX.Y/site-packages)."""
    listed = ", ".join(f"`{r}`" for r in wanted)
    folder = ctx.work_dir / FOLDER
    folder.mkdir()
    (folder / "home").mkdir()
    (folder / "constraints.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in kernel_packages().values())
    )
    (folder / "requested.txt").write_text("".join(f"{r}\n" for r in wanted))
    sandbox.prepare_work_dir(ctx.settings, folder)
    ctx.log(f"installing from {REQUIREMENTS_FILE}: {listed}")
    started = time.monotonic()
    returncode, output = _run_pip(ctx, folder, folder / "home")
    if returncode != 0:
        raise PhaseFailed(describe_pip_failure(output, returncode))
    ctx.log(f"{REQUIREMENTS_FILE} installed in {time.monotonic() - started:.1f} s")
    return prefix_of(folder)


def prefix_of(folder: Path) -> Path:
    """pip's --prefix inside the install folder."""
    return folder / "prefix"


def pip_command(ctx: PhaseContext, folder: Path) -> list[str]:
    """pip's command line: wheels only, into the folder, the kernel's packages held fixed."""
    return [
        sys.executable,
        "-I",
        *("-m", "pip", "install"),
        "--isolated",  # no pip.conf or PIP_* variable of the host changes what runs here
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--no-warn-script-location",
        "--progress-bar=off",
        *("--prefix", str(prefix_of(folder))),
        *("--index-url", ctx.settings.requirements_index_url),
        *("--constraint", str(folder / "constraints.txt")),
        *("--requirement", str(folder / "requested.txt")),
    ]


def _run_pip(ctx: PhaseContext, folder: Path, home: Path) -> tuple[int, list[str]]:
    """Run pip in the sandbox, its output streamed to the log; stop it on cancel or timeout."""
    env = kernel_environment(
        ctx.settings,
        home=home,
        extra={"TMPDIR": "/tmp"} if ctx.settings.kernel_sandbox == "on" else {},
    )
    command = sandbox.wrap(
        ctx.settings, pip_command(ctx, folder), work_dir=ctx.work_dir, cwd=folder, network="egress"
    )
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    pending = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if ctx.cancelled:
                    raise PipelineCancelled
                if ctx.remaining() <= 0:
                    raise PhaseFailed(
                        f"installing {REQUIREMENTS_FILE} did not finish within the pipeline "
                        f"time limit (PIPELINE_TIMEOUT_SECONDS="
                        f"{ctx.settings.pipeline_timeout_seconds})"
                    )
                if not selector.select(timeout=0.2):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop() if chunk else b""
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        output.append(line)
                        ctx.log(line, stream="stderr" if line.startswith("ERROR") else "stdout")
                if not chunk:
                    break
        return proc.wait(), output
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        proc.stdout.close()


def describe_pip_failure(output: list[str], returncode: int) -> str:
    """The pipeline's error for a failed install: pip's own error lines, and what they mean."""
    first = next((i for i, line in enumerate(output) if line.startswith("ERROR:")), len(output))
    errors = [line for line in output[first:] if line.startswith(("ERROR:", "    "))]
    shown = " / ".join(line.strip() for line in errors[:ERROR_LINES]) or (
        f"pip exited with code {returncode}: " + " / ".join(output[-3:])
    )
    message = f"installing {REQUIREMENTS_FILE} failed: {shown}"
    text = "\n".join(output)
    if "(from versions: none)" in text:
        message += (
            " (only wheels are installed, never built from source: the package, or that "
            "version, may publish no wheel for Linux and this Python, or not exist under "
            "that name)"
        )
    if "(constraint)" in text:
        message += (
            " (the kernel's own packages keep their versions: a requirement that needs "
            "another version of one of them cannot be installed here)"
        )
    return message


def import_paths(environment: Path | None) -> list[str]:
    """The folders of an installed environment (pip's --prefix layout) to import from, for
    REQUIREMENTS_PATH_VARIABLE; none without one."""
    if environment is None:
        return []
    return sorted(str(p) for p in environment.glob("lib*/python*/site-packages"))


def installed_version(package: str, environment: Path | None) -> str | None:
    """The version of `package` the kernel of this pipeline has: from its requirements.txt
    environment, or its own (under that name or another providing the same module)."""
    found = next(
        iter(importlib.metadata.distributions(name=package, path=import_paths(environment))), None
    )
    if found is not None:
        return found.version
    provider = installed_provider(package)
    return provider[1] if provider is not None else None
