"""The HTTP paths each server answers, read from source (nothing is imported or started).

The image and manifest checks use them: a health check or probe must ask a path that exists.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tests.support.import_closure import ROOT


def declared_get_routes(package: str) -> set[str]:
    """Paths of the GET routes a project package declares (`@router.get("/path")`)."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        found |= set(re.findall(r"@\w+\.get\(\s*\"(/[^\"]*)\"", path.read_text()))
    return found


def mlflow_server_routes() -> set[str]:
    """Paths MLflow's server declares (`@app.route(_add_static_prefix("/path"))`), read from
    its source rather than imported (importing it builds the whole Flask app)."""
    spec = importlib.util.find_spec("mlflow")  # a top-level find runs nothing
    assert spec is not None and spec.origin is not None
    server = Path(spec.origin).parent / "server" / "__init__.py"
    return set(re.findall(r"_add_static_prefix\(\"(/[^\"]*)\"\)", server.read_text()))


# What serves each of the platform's images, by image name (deploy/Dockerfile's targets).
SERVED_PATHS = {
    "notebook-mlops-backend": lambda: declared_get_routes("backend"),
    "notebook-mlops-model-server": lambda: declared_get_routes("model_server"),
    "notebook-mlops-mlflow": mlflow_server_routes,
}
