"""Which model names can exist in the MLflow registry, checked before any call reaches it.

MLflow refuses some names with INVALID_PARAMETER_VALUE rather than "not found" (a `:` or `/`,
a blank name, `.` or a name starting with `..`), and control characters cannot travel in the
URL of the backend's call to a model server. Answering such names with a 422 (backend) or a 404
(model server) here keeps them from surfacing as server errors further down.
"""

from __future__ import annotations

import posixpath
import unicodedata

# Unicode categories that cannot be part of a name: control characters and lone surrogates.
_UNPRINTABLE = {"Cc", "Cs"}


def model_name_problem(name: str) -> str | None:
    """Why `name` can never be a registered model's name, or None when it can be."""
    if not name.strip():
        return "a model name must not be empty"
    if any(unicodedata.category(char) in _UNPRINTABLE for char in name):
        return "a model name must not contain control characters"
    if "/" in name or ":" in name:
        return "a model name must not contain '/' or ':'"
    normalised = posixpath.normpath(name)
    if normalised != name or normalised == "." or normalised.startswith(".."):
        return "a model name must not be '.' or start with '..'"
    return None


def check_model_name(name: str) -> str:
    """`name` unchanged, or ValueError naming why the registry would refuse it."""
    problem = model_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name
