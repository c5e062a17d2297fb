"""A version whose model needs a package the model server lacks: refused naming the package,
while the version served before keeps answering."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import mlflow
import mlflow.sklearn
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_core.model_registry import set_served_version
from model_server.estimator import missing_requirements
from tests.serving.conftest import ModelServer, iris_like, register_version, unique
from tests.support.processes import wait_for
from worker.sandbox.model_requirements import model_requirements


@pytest.fixture
def package_only_here(tmp_path: Path) -> Iterator[ModuleType]:
    """A package installed in this test process alone, the way pip installs one (a module and
    its dist-info): the model-server processes started here do not have it."""
    module = f"scaler_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site-packages"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text("def halve(x):\n    return x / 2\n")
    info = site / f"{module}-1.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.4\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    sys.path.insert(0, str(site))
    try:
        yield importlib.import_module(module)
    finally:
        sys.path.remove(str(site))
        sys.modules.pop(module, None)


def test_a_version_needing_a_package_the_server_lacks_is_refused_naming_it(
    registry: MlflowClient,
    start_server: Callable[..., ModelServer],
    move_alias: Callable[[str, str], None],
    serving_alias: str,
    package_only_here: ModuleType,
) -> None:
    x, y = iris_like()
    name = unique("needs-package")
    served = register_version(DummyRegressor(strategy="constant", constant=1.0).fit(x, y), x, name)
    set_served_version(registry, name, served, serving_alias)
    server = start_server("replica-requirements", MODEL_RECONCILE_INTERVAL_SECONDS="600")
    assert server.served()[name] == served

    model = make_pipeline(
        FunctionTransformer(package_only_here.halve), DummyRegressor(strategy="mean")
    ).fit(x, y)
    requirements, unprovided = model_requirements(model)
    package = f"{package_only_here.__name__}==1.4"
    assert package in requirements and not unprovided
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=x[:2],
            pip_requirements=requirements,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    needing = str(mlflow.register_model(info.model_uri, name).version)
    move_alias(name, needing)

    row = wait_for(
        lambda: (r := server.models()[name])["last_error"] and r,
        60,
        what=f"the server's verdict on {name} v{needing}",
    )
    assert row["version"] == served
    assert row["last_error"]["version"] == needing
    assert f"needs `{package}`" in row["last_error"]["error"]
    # The version served before keeps answering ...
    answer = httpx.post(f"{server.url}/predict/{name}", json={"data": [x[0].tolist()]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == served
    # ... and the refused one is reported as unavailable (503) with the reason, not unknown.
    refused = httpx.get(f"{server.url}/v2/models/{name}/versions/{needing}", timeout=10)
    assert refused.status_code == 503
    assert f"needs `{package}`" in refused.json()["error"]
    ready = httpx.get(f"{server.url}/v2/models/{name}/versions/{needing}/ready", timeout=10)
    assert (ready.status_code, ready.json()["ready"]) == (503, False)
    set_served_version(registry, name, served, serving_alias)


def test_missing_requirements_reads_the_model_folders_requirements(tmp_path: Path) -> None:
    """Installed packages pass under their own name or the module they provide (`xgboost` is
    the installed xgboost-cpu); options and markers that do not apply are passed over."""
    (tmp_path / "requirements.txt").write_text(
        "mlflow==3.17.2\nscikit-learn\nxgboost==3.2.0\n-c constraints.txt\n"
        "not-installed-here==2.0\nwinonly==1.0; sys_platform == 'win32'\n"
    )
    assert missing_requirements(tmp_path) == ["not-installed-here==2.0"]
