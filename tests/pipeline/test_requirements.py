"""What a notebook can import: the kernel's own stack, a requirements.txt beside it, and the
requirements its model carries to the model servers. Real worker, sandbox, pip and PyPI."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import mlflow
import pytest

from mlops_core.settings import Settings
from mlops_core.states import PHASE_ORDER, Phase
from model_server.loaded_model import ModelLoadError, load_version
from tests.pipeline.conftest import (
    WorkerGroup,
    build_notebook,
    create_pipeline,
    log_events,
    unique_model_name,
    wait_finished,
)
from tests.support.phases import log_lines
from worker import environment_cache, requirements_install
from worker.phases import environment
from worker.phases.context import PhaseContext, PhaseFailed

# A small pure-Python wheel on PyPI that the platform's environment does not have.
EXTRA_PACKAGE = "toolz"


def notebook(name: str, training: str) -> str:
    return build_notebook(
        [
            (("mlops:config",), f'MODEL_NAME = "{name}"\nVERSION = "1"'),
            (
                ("mlops:preprocessing",),
                "X = [[0.0, 1.0], [1.0, 0.0], [0.0, 0.9], [1.0, 0.1]] * 5\ny = [0, 1, 0, 1] * 5",
            ),
            (("mlops:training",), training),
            (("mlops:evaluation",), "import mlflow\nmlflow.log_metric('accuracy', 1.0)"),
            (("mlops:export",), "import joblib\njoblib.dump(model, MODEL_OUTPUT_PATH)"),
        ]
    )


def push(group: WorkerGroup, repo, files: dict[str, str]) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    sha = repo.commit(files)
    pipeline_id = create_pipeline(group.database_url, repo, commit_sha=sha)
    group.send(pipeline_id)
    return pipeline_id, wait_finished(group.database_url, pipeline_id)


def logged_requirements(mlflow_uri: str, name: str, version: str, into: Path) -> list[str]:
    """The version's requirements.txt; also points this process's MLflow at the server, as a
    model server does at start (MLflow resolves `models:/` URIs against the global registry)."""
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}",
        dst_path=str(into),
        tracking_uri=mlflow_uri,
        registry_uri=mlflow_uri,
    )
    return (Path(folder) / "requirements.txt").read_text().split()


def test_a_missing_package_is_named_and_requirements_txt_beside_the_notebook_adds_it(
    shared_worker: WorkerGroup, make_repo, tmp_path: Path
) -> None:
    """The first push fails saying what to do; the push that follows the advice succeeds, its
    model records the package, and a model server without it refuses the version naming it."""
    assert importlib.util.find_spec(EXTRA_PACKAGE) is None, (
        f"{EXTRA_PACKAGE} must not be in the platform's environment for this test"
    )
    name = unique_model_name("needs-toolz")
    source = notebook(
        name,
        f"import {EXTRA_PACKAGE}\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import FunctionTransformer\n"
        f"model = make_pipeline(FunctionTransformer({EXTRA_PACKAGE}.identity),"
        " LogisticRegression()).fit(X, y)",
    )
    repo = make_repo()

    _, failed = push(shared_worker, repo, {"train.ipynb": source})
    assert failed["status"] == "failed"
    assert f"No module named '{EXTRA_PACKAGE}'" in failed["error"]
    assert f"add `{EXTRA_PACKAGE}` to requirements.txt beside the notebook" in failed["error"]

    pipeline_id, state = push(
        shared_worker, repo, {"requirements.txt": f"# for the first step\n{EXTRA_PACKAGE}\n"}
    )
    assert state["status"] == "success", state["error"]
    lines = [event.text for event in log_events(shared_worker.redis_url, pipeline_id)]
    assert any(f"Successfully installed {EXTRA_PACKAGE}-" in line for line in lines)
    requirements = logged_requirements(
        shared_worker.mlflow_uri, name, state["model_version"], tmp_path
    )
    assert any(r.startswith(f"{EXTRA_PACKAGE}==") for r in requirements), requirements
    assert f"scikit-learn=={importlib.metadata.version('scikit-learn')}" in requirements

    # This test process is a model server's environment: it has no toolz.
    with pytest.raises(ModelLoadError, match=f"needs `{EXTRA_PACKAGE}=="):
        load_version(name, state["model_version"], shared_worker.mlflow_uri, tmp_path)


def test_a_second_run_with_the_same_requirements_reuses_the_cached_environment(
    shared_worker: WorkerGroup, make_repo
) -> None:
    """The environment phase installs on a miss and caches the environment by the file's hash;
    the next run with the same requirements.txt runs no pip. The kernels import the package
    from the cache, and cannot change it for the pipelines that come after them."""
    name = unique_model_name("cached-env")
    # A key no other test (or earlier session run of this worker) has.
    requirements = f"# environment cache test {uuid.uuid4().hex}\n{EXTRA_PACKAGE}\n"
    source = notebook(
        name,
        f"import pathlib\nimport mlflow\nimport {EXTRA_PACKAGE}\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "model = LogisticRegression().fit(X, y)\n"
        f"module = pathlib.Path({EXTRA_PACKAGE}.__file__)\n"
        "mlflow.log_metric('from_cache', float('/environments/' in str(module)))\n"
        "try:\n"
        "    module.write_text('poisoned = True')\n"
        "    mlflow.log_metric('cache_written', 1.0)\n"
        "except OSError:\n"
        "    mlflow.log_metric('cache_written', 0.0)",
    )
    repo = make_repo()
    first_id, first = push(
        shared_worker, repo, {"train.ipynb": source, "requirements.txt": requirements}
    )
    assert first["status"] == "success", first["error"]
    assert list(first["phases"]) == [phase.value for phase in PHASE_ORDER]
    assert first["phases"][Phase.ENVIRONMENT] == ("success", None)
    installing = [
        event.text
        for event in log_events(shared_worker.redis_url, first_id)
        if event.phase == Phase.ENVIRONMENT
    ]
    assert any(f"Successfully installed {EXTRA_PACKAGE}-" in line for line in installing)
    assert any(line.startswith("environment cached (key ") for line in installing)

    second_id, second = push(shared_worker, repo, {"README.md": "another commit\n"})
    assert second["status"] == "success", second["error"]
    lines = [event.text for event in log_events(shared_worker.redis_url, second_id)]
    assert any("reused the environment cached for this requirements.txt" in line for line in lines)
    assert not any("installing from requirements.txt" in line for line in lines)
    assert not any("Successfully installed" in line for line in lines)
    for state in (first, second):
        assert state["metrics"]["from_cache"] == 1.0
        assert state["metrics"]["cache_written"] == 0.0


def test_runs_publishing_the_same_environment_at_once_leave_one_whole_entry(
    tmp_path: Path,
) -> None:
    root = tmp_path / "environments"
    key = environment_cache.environment_key(b"toolz\n", [("numpy", "2.3.0")], "https://x/simple")
    builds = []
    for i in range(4):
        package = tmp_path / f"work-{i}" / "prefix" / "lib" / "python3.11" / "site-packages" / "pkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"BUILD = {i}\n")
        (package / "__init__.py").chmod(0o666)  # as a careless wheel might leave it
        builds.append(package.parents[3])
    start = threading.Barrier(len(builds))
    published: list[Path] = []

    def publish(built: Path) -> None:
        start.wait()
        published.append(environment_cache.publish(root, key, built, {"requirements": ["toolz"]}))

    threads = [threading.Thread(target=publish, args=(built,)) for built in builds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert published == [root / key] * len(builds)
    assert [path.name for path in root.iterdir()] == [key]  # no half-written copy left
    assert environment_cache.lookup(root, key) == root / key
    module = root / key / "lib" / "python3.11" / "site-packages" / "pkg" / "__init__.py"
    assert module.read_text() in {f"BUILD = {i}\n" for i in range(len(builds))}
    assert stat.S_IMODE(module.stat().st_mode) == 0o644  # writable by the worker alone
    assert not any(built.exists() for built in builds)


def test_the_environment_key_follows_the_file_the_kernel_and_the_index() -> None:
    key = environment_cache.environment_key
    base = key(b"toolz\n", [("numpy", "2.3.0")], "https://pypi.org/simple")
    assert base == key(b"toolz\n", [("numpy", "2.3.0")], "https://pypi.org/simple")
    assert base != key(b"toolz==1.0.0\n", [("numpy", "2.3.0")], "https://pypi.org/simple")
    assert base != key(b"toolz\n", [("numpy", "2.3.1")], "https://pypi.org/simple")
    assert base != key(b"toolz\n", [("numpy", "2.3.0")], "https://mirror.example/simple")


def test_a_gradient_boosting_model_records_its_library_and_serves(
    shared_worker: WorkerGroup, make_repo, tmp_path: Path
) -> None:
    """XGBoost and LightGBM are in the kernel; the model's requirements name both (not a fixed
    scikit-learn list), and the model server loads and predicts with them."""
    name = unique_model_name("boosted")
    source = notebook(
        name,
        "from lightgbm import LGBMClassifier\n"
        "from sklearn.ensemble import VotingClassifier\n"
        "from xgboost import XGBClassifier\n"
        "model = VotingClassifier([\n"
        "    ('xgb', XGBClassifier(n_estimators=5, max_depth=2)),\n"
        "    ('lgbm', LGBMClassifier(n_estimators=5, min_child_samples=1, verbose=-1)),\n"
        "], voting='soft').fit(X, y)",
    )
    pipeline_id, state = push(shared_worker, make_repo(), {"train.ipynb": source})
    assert state["status"] == "success", state["error"]
    requirements = logged_requirements(
        shared_worker.mlflow_uri, name, state["model_version"], tmp_path / "download"
    )
    for package in ("xgboost-cpu", "lightgbm", "scikit-learn"):
        assert f"{package}=={importlib.metadata.version(package)}" in requirements
    lines = [event.text for event in log_events(shared_worker.redis_url, pipeline_id)]
    assert any(line.startswith("model requirements:") and "lightgbm==" in line for line in lines)
    with (
        tempfile.TemporaryDirectory() as cache,
        closing(
            load_version(name, state["model_version"], shared_worker.mlflow_uri, Path(cache))
        ) as served,
    ):
        assert served.predict([[0.0, 1.0], [1.0, 0.0]]).predictions == [0, 1]


def install_context(
    make_phase_context: Callable[..., PhaseContext], tmp_path: Path, requirements: str
) -> PhaseContext:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "train.ipynb").write_text("{}")
    (checkout / "requirements.txt").write_text(requirements)
    ctx = make_phase_context(
        Settings(_env_file=None, mlops_home=tmp_path / "home"),  # type: ignore[call-arg]
        phase="environment",
        notebook_file=checkout / "train.ipynb",
    )
    ctx.work_dir.mkdir(parents=True)  # as the runner leaves it after fetch
    return ctx


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        (
            "numpy<2\nseaborn\n",
            "asks for other versions of packages the kernel ships: `numpy<2` (the kernel has numpy",
        ),
        ("--index-url http://127.0.0.1:9/simple\ntoolz\n", "line 1: `--index-url`: pip options"),
        ("toolz @ https://example.com/toolz.whl\n", "line 1: `toolz @ https://example.com"),
    ],
)
def test_a_requirements_txt_that_would_change_the_kernel_or_steer_pip_is_refused_before_pip(
    make_phase_context: Callable[..., PhaseContext],
    tmp_path: Path,
    requirements: str,
    expected: str,
) -> None:
    ctx = install_context(make_phase_context, tmp_path, requirements)
    with pytest.raises(PhaseFailed, match=re.escape(expected)):
        environment.run(ctx)
    assert not (ctx.work_dir / requirements_install.FOLDER).exists()  # pip never ran


def test_a_requirement_pip_cannot_install_fails_naming_it_and_what_was_asked(
    make_phase_context: Callable[..., PhaseContext], tmp_path: Path
) -> None:
    """Also: `xgboost` is the kernel's xgboost-cpu (no second copy), seaborn is there already."""
    missing = "no-such-package-mlops-test"
    ctx = install_context(make_phase_context, tmp_path, f"xgboost>=2\nseaborn\n{missing}==1.0\n")
    with pytest.raises(PhaseFailed) as failed:
        environment.run(ctx)
    assert f"No matching distribution found for {missing}==1.0" in str(failed.value)
    assert "only wheels are installed" in str(failed.value)
    lines = log_lines(ctx)
    assert any("`xgboost>=2`: the kernel has xgboost-cpu" in line for line in lines)
    assert any(f"installing from requirements.txt: `{missing}==1.0`" in line for line in lines)


def test_a_requirements_txt_that_links_elsewhere_is_not_read(
    make_phase_context: Callable[..., PhaseContext], tmp_path: Path
) -> None:
    """The worker reads it with its own rights: a link to a file of the worker's would put
    that file's lines into the pipeline's log."""
    secret = tmp_path / "worker-secret.txt"
    secret.write_text("hunter2\n")
    ctx = install_context(make_phase_context, tmp_path, "")
    link = tmp_path / "checkout" / "requirements.txt"
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(PhaseFailed, match=r"requirements\.txt beside the notebook is not a plain"):
        environment.run(ctx)
    assert not any("hunter2" in line for line in log_lines(ctx))
