"""requirements.txt beside a notebook, the hint for a failed import, and the packages a model
needs, checked without a kernel."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_core.notebook_requirements import (
    RequirementsError,
    distribution_for_import,
    import_error_hint,
    installs_in_cell,
    parse_requirements,
)
from worker import requirements_install
from worker.sandbox.model_requirements import model_requirements

KERNEL = {"scikit-learn": "1.7.2", "numpy": "2.4.6"}


def test_package_names_versions_markers_and_comments_are_read() -> None:
    text = "# plots\nseaborn\ntabulate==0.9.0  # tables\nfoo[fast]>=1,<2; python_version>='3.8'\n"
    assert [str(r) for r in parse_requirements(text)] == [
        "seaborn",
        "tabulate==0.9.0",
        'foo[fast]<2,>=1; python_version >= "3.8"',
    ]


def test_every_line_pip_would_take_elsewhere_is_named() -> None:
    text = "-r a.txt\n--extra-index-url https://x\n./local\npkg @ https://x/p.whl\nok\nok\nfoo \\\n"
    with pytest.raises(RequirementsError) as caught:
        parse_requirements(text)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
        "line 6",
        "line 7",
    ]
    assert "`ok` is listed twice (lines 5 and 6)" in caught.value.problems[4]


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("sklearn.ensemble", "scikit-learn"),
        ("cv2", "opencv-python-headless"),
        ("PIL.Image", "pillow"),
        ("yaml", "pyyaml"),
        ("google.protobuf", "protobuf"),
        ("category_encoders", "category-encoders"),
        ("seaborn", "seaborn"),
    ],
)
def test_import_names_map_to_the_package_pip_installs(module: str, package: str) -> None:
    assert distribution_for_import(module) == package


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        (
            "ModuleNotFoundError: No module named 'seaborn'",
            "the kernel has no package `seaborn`: add `seaborn` to requirements.txt beside the "
            "notebook",
        ),
        (
            "ModuleNotFoundError: No module named 'PIL'",
            "the kernel has no package `pillow` (module `PIL` comes from the package `pillow`): "
            "add `pillow` to requirements.txt beside the notebook",
        ),
        (
            "ImportError: cannot import name 'load_boston' from 'sklearn.datasets' (/x.py)",
            "the kernel's scikit-learn 1.7.2 has no `load_boston` in `sklearn.datasets`",
        ),
        (
            "ModuleNotFoundError: No module named 'sklearn.externals.joblib'",
            "the kernel's scikit-learn 1.7.2 has no module `sklearn.externals.joblib`",
        ),
        ("ImportError: libgomp.so.1: cannot open shared object file", None),
        ("ValueError: No module named 'x'", None),
    ],
)
def test_a_failed_import_says_what_to_do(message: str, hint: str | None) -> None:
    found = import_error_hint(message, KERNEL.get)
    assert found == hint if hint is None else found is not None and found.startswith(hint)


def test_install_commands_in_a_cell_are_found() -> None:
    source = (
        "!pip install seaborn\n%pip install -q a\n  !python3 -m pip install b\n%conda install c\n"
        "!uv pip install d\nprint('pip install e')\n# !pip install f\n"
    )
    assert installs_in_cell(source) == [
        "!pip install seaborn",
        "%pip install -q a",
        "!python3 -m pip install b",
        "%conda install c",
        "!uv pip install d",
    ]


def test_a_models_requirements_are_the_packages_its_pickle_refers_to() -> None:
    """numpy (the ufunc) and scikit-learn, pinned; a repository module saved by value adds
    nothing of its own; a module no package installed is reported, not guessed."""
    repository = types.ModuleType("features_here")
    exec("import numpy as np\ndef logged(x):\n    return np.log1p(x)\n", repository.__dict__)  # noqa: S102
    unpackaged = types.ModuleType("unpackaged_helpers")
    exec("def double(x):\n    return x * 2\n", unpackaged.__dict__)  # noqa: S102
    sys.modules.update(features_here=repository, unpackaged_helpers=unpackaged)
    cloudpickle.register_pickle_by_value(repository)
    try:
        x = np.arange(8.0).reshape(4, 2)
        model = make_pipeline(
            FunctionTransformer(repository.logged),
            FunctionTransformer(unpackaged.double),
            LinearRegression(),
        ).fit(x, x[:, 0])
        requirements, unprovided = model_requirements(model)
    finally:
        cloudpickle.unregister_pickle_by_value(repository)
        del sys.modules["features_here"], sys.modules["unpackaged_helpers"]
    names = [r.split("==")[0] for r in requirements]
    assert names == ["cloudpickle", "numpy", "scikit-learn"]
    assert unprovided == ["unpackaged_helpers"]


def test_a_model_holding_a_large_array_has_its_requirements_found() -> None:
    """Regression (the corpus' digits notebook): protocol 5 writes a large numpy array as a
    PickleBuffer, and the register phase failed with "PickleBuffer has no len()"."""
    x = np.random.default_rng(0).random((2000, 64))
    model = KNeighborsClassifier().fit(x, np.arange(2000) % 10)  # keeps its 1 MB of rows
    requirements, unprovided = model_requirements(model)
    names = [r.split("==")[0] for r in requirements]
    assert names == ["cloudpickle", "numpy", "scikit-learn"] and unprovided == []


def test_the_hint_knows_packages_installed_from_the_pipelines_requirements(
    tmp_path: Path,
) -> None:
    """A package of the notebook's requirements.txt that lacks a name is "another version",
    not "missing"; `xgboost` is the kernel's xgboost-cpu."""
    environment = tmp_path / "environment"  # pip's --prefix layout
    site = environment / "lib" / "python3.11" / "site-packages"
    (site / "tabulate-0.8.0.dist-info").mkdir(parents=True)
    (site / "tabulate-0.8.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tabulate\nVersion: 0.8.0\n"
    )
    assert requirements_install.installed_version("tabulate", environment) == "0.8.0"
    assert requirements_install.installed_version("tabulate", None) is None
    assert requirements_install.installed_version("xgboost", environment) == (
        importlib.metadata.version("xgboost-cpu")
    )
    assert requirements_install.installed_version("no-such-package", environment) is None
