"""The packages a model needs to be loaded, with the versions of the kernel that trained it.

They become the logged model's requirements.txt: what a model server must have to load the
version (model_server/estimator.py checks it before unpickling and names what it lacks).
A fixed list (scikit-learn, numpy, ...) left out whatever else the model was made of, an
XGBoost or LightGBM estimator, a function of a package from the notebook's requirements.txt,
and such a version failed only on the model server, unpickling.

The model is pickled once more exactly as MLflow will save it (cloudpickle, the repository's
own modules by value) by a pickler that records every module the pickle refers to by name:
those are the imports unpickling will do, no more, no fewer. Each is mapped to the package
that installed it (importlib.metadata) and pinned to its installed version. It takes
milliseconds; MLflow's own inference (save_model without pip_requirements) loads the model in
a fresh interpreter to watch its imports: ~10 s a model here, and it lists packages of
MLflow's own (psutil, pyarrow) that the model does not need.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cloudpickle
from packaging.utils import canonicalize_name

# The sklearn flavour loads every model with these, whatever the model is made of.
FLAVOR_PACKAGES = ("scikit-learn", "cloudpickle")


class _Discard:
    """A file that keeps nothing: only the pickler's observations matter.

    Protocol 5 hands large buffers (a numpy array of a few hundred KB: an SVC's support
    vectors, a k-NN's training rows) to `write` as a PickleBuffer, which has no len().
    """

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        return memoryview(data).nbytes


class _RecordingPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting each module the pickle will import when loaded."""

    def __init__(self) -> None:
        super().__init__(_Discard())
        self.modules: set[str] = set()
        self._by_value = cloudpickle.list_registry_pickle_by_value()

    def reducer_override(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ not in self._by_value:
                self.modules.add(obj.__name__)
        elif reduced is NotImplemented and isinstance(
            obj, type | types.FunctionType | types.BuiltinFunctionType
        ):
            # NotImplemented: cloudpickle saves it by reference (module and name).
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return reduced


def referenced_modules(model: Any) -> set[str]:
    """Names of the modules loading the pickled `model` imports."""
    pickler = _RecordingPickler()
    pickler.dump(model)
    return pickler.modules


def package_providers() -> Mapping[str, list[str]]:
    """Which installed packages provide each top-level module (~0.5 s to read: every
    package's file list; the model-logging child reads it while the notebook runs)."""
    return importlib.metadata.packages_distributions()


def model_requirements(
    model: Any, providers: Mapping[str, list[str]] | None = None
) -> tuple[list[str], list[str]]:
    """`name==version` for each package the model needs, and modules no package provides.

    The second list holds modules found on the import path but installed by no package (a
    module beside the notebook outside the checkout, say): a model server will lack them.
    """
    if providers is None:
        providers = package_providers()
    packages: dict[str, str] = {canonicalize_name(p): p for p in FLAVOR_PACKAGES}
    unprovided: list[str] = []
    for module in sorted(referenced_modules(model)):
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("__main__", "builtins"):
            continue
        owners = _owners(module, providers.get(top, []))
        if not owners:
            unprovided.append(module)
        for owner in owners:
            packages.setdefault(canonicalize_name(owner), owner)
    pinned = sorted(f"{name}=={importlib.metadata.version(name)}" for name in packages.values())
    return pinned, unprovided


def _owners(module: str, candidates: list[str]) -> list[str]:
    """The package(s) that installed `module`: the one whose files hold it when several
    packages share its top-level name (namespace packages such as `google`)."""
    if len(candidates) < 2:
        return candidates
    file = getattr(sys.modules.get(module), "__file__", None)
    if file is None:
        return candidates
    target = Path(file).resolve()
    for name in candidates:
        files = importlib.metadata.distribution(name).files or []
        if any(Path(str(f.locate())).resolve() == target for f in files):
            return [name]
    return candidates


def describe(requirements: list[str], unprovided: list[str]) -> str:
    """The log line naming what a logged model requires (and what no package provides)."""
    line = f"model requirements: {', '.join(requirements)}"
    if unprovided:
        line += (
            f"; it also refers to {', '.join(unprovided)}, which no installed package provides:"
            " a model server will not have it (commit the module inside the repository)"
        )
    return line
