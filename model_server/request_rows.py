"""Turn the accepted prediction request shapes into validated rows for one model.

Accepted (seed-compatible) bodies:
  {"data": [[...], ...]}              rows as lists
  {"features": [...]}                 one row
  {"features": [[...], ...]}          several rows
  {"records": [{name: value}, ...]}   rows keyed by feature name (also {"data": [{...}, ...]})
  {"instances": ...}                  same as "data" (TF-Serving / MLflow style)
  {name: value, ...}                  one row keyed by feature name (the model must know them)

A request of numbers only is validated as a whole: one scan of the value types (in C) and one
numpy conversion, which also finds rows of the wrong length. Only a request that fails that is
walked value by value, to say where the problem is (row, feature), so that a caller can fix it
without reading server logs.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from model_server.feature_spec import STRING, FeatureSpec

# Validated rows: a float64 matrix when every feature is a number, else lists in column order.
Rows = np.ndarray | list[list[Any]]

_ROW_KEYS = ("data", "instances", "features", "records")
_NUMBERS = frozenset({int, float})


class InputError(ValueError):
    """The request body does not fit the model; the message names the problem."""


def rows_from_body(body: Any, features: FeatureSpec) -> Rows:
    """Validated rows (feature values in the model's column order)."""
    if not isinstance(body, dict):
        raise InputError(
            "request body must be a JSON object with one of 'data', 'features' or 'records'"
        )
    present = [key for key in _ROW_KEYS if key in body]
    if not present:
        if features.names is not None and not set(body).isdisjoint(features.names):
            return rows_from_records([body], features, "request body")
        raise InputError(
            "request body needs one of 'data', 'features' or 'records'"
            + (
                f", or one row as an object keyed by feature name ({', '.join(features.names)})"
                if features.names is not None
                else ""
            )
        )
    if len(present) > 1:
        raise InputError(f"request body has both {present[0]!r} and {present[1]!r}; send one")
    key = present[0]
    value = body[key]
    if not isinstance(value, list):
        raise InputError(f"{key!r} must be a list, got {type(value).__name__}")
    if not value:
        raise InputError(f"empty batch: {key!r} has no rows")
    if key == "features" and not isinstance(value[0], list | dict):
        value = [value]
    if key == "records" or isinstance(value[0], dict):
        return rows_from_records(value, features, key)
    return rows_from_lists(value, features, key)


def rows_from_lists(rows: list[Any], features: FeatureSpec, key: str = "data") -> Rows:
    """Check each row is a list of the right length with values of the right kind."""
    matrix = numeric_matrix(rows, features)
    if matrix is not None:
        return matrix
    expected = features.count
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(
                f"{key!r} row {index} must be a list of feature values, got {type(row).__name__}"
            )
        if expected is None:
            expected = len(row)
        if len(row) != expected:
            raise InputError(_wrong_width(index, len(row), expected, features))
        if not row:
            raise InputError(f"row {index} has no feature values")
        for column, item in enumerate(row):
            _check_value(item, features, index, column)
    return rows


def rows_from_records(records: list[Any], features: FeatureSpec, key: str = "records") -> Rows:
    """Records keyed by feature name → rows in the model's column order."""
    if features.names is None:
        raise InputError(
            "this model does not know its feature names; send rows as lists "
            '(e.g. {"data": [[...]]})'
        )
    names = features.names
    wanted = set(names)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or record.keys() != wanted:
            _record_problem(record, index, names, key)
    pick = itemgetter(*names)
    rows: list[Any] = (
        [[record[names[0]]] for record in records]
        if len(names) == 1
        else [pick(record) for record in records]
    )
    matrix = numeric_matrix(rows, features)
    if matrix is not None:
        return matrix
    listed = [list(row) for row in rows]
    for index, row in enumerate(listed):
        for column, item in enumerate(row):
            _check_value(item, features, index, column)
    return listed


def numeric_matrix(rows: list[Any], features: FeatureSpec) -> np.ndarray | None:
    """The rows as a float64 matrix when they are all numbers, of the model's width; None when
    they are anything else (the caller then walks them to say what is wrong)."""
    if features.kinds is not None and STRING in features.kinds:
        return None
    try:
        kinds = set(map(type, chain.from_iterable(rows)))
    except TypeError:  # a row that is not a list
        return None
    if not kinds <= _NUMBERS:
        return None
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, OverflowError):  # rows of different lengths; an integer past a double
        return None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        return None
    if features.count is not None and matrix.shape[1] != features.count:
        return None
    return matrix


def checked_matrix(matrix: np.ndarray, features: FeatureSpec) -> np.ndarray:
    """A matrix decoded from a tensor, checked like rows: width, and finite values (binary
    tensors can carry NaN and infinities, which JSON cannot)."""
    if matrix.shape[0] == 0:
        raise InputError("empty batch: the input tensor has no rows")
    width = matrix.shape[1]
    if features.count is not None and width != features.count:
        raise InputError(_wrong_width(0, width, features.count, features))
    if width == 0:
        raise InputError("row 0 has no feature values")
    finite = np.isfinite(matrix)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"non-finite value at {_where(features, row, column)}: {matrix[row, column]!r} "
            "(send finite numbers only)"
        )
    return matrix


def _record_problem(record: Any, index: int, names: tuple[str, ...], key: str) -> None:
    """Raise the InputError saying why `record` is not a row keyed by exactly `names`."""
    if not isinstance(record, dict):
        raise InputError(
            f"{key!r} row {index} must be an object keyed by feature name, "
            f"got {type(record).__name__}"
        )
    missing = [n for n in names if n not in record]
    if missing:
        raise InputError(f"row {index} is missing features: {', '.join(missing)}")
    unknown = sorted(set(record) - set(names))
    raise InputError(
        f"row {index} has unknown features: {', '.join(unknown)} "
        f"(the model expects {', '.join(names)})"
    )


def _wrong_width(index: int, width: int, expected: int, features: FeatureSpec) -> str:
    return f"wrong feature count: row {index} has {width} values, the model expects {expected}" + (
        f" ({', '.join(features.names)})" if features.names else ""
    )


def _where(features: FeatureSpec, row: int, column: int) -> str:
    return f"row {row}, feature " + (
        repr(features.names[column]) if features.names else f"{column}"
    )


def _check_value(item: Any, features: FeatureSpec, row: int, column: int) -> None:
    if features.kind(column) == STRING:
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise InputError(
                f"{_where(features, row, column)}: expected a string, got {_describe(item)}"
            )
        return
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise InputError(f"non-numeric value at {_where(features, row, column)}: {_describe(item)}")


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 40 else text[:37] + "..."
