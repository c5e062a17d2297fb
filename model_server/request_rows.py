"""Turn the accepted prediction request shapes into validated rows for one model.

Accepted (seed-compatible) bodies:
  {"data": [[...], ...]}              rows as lists
  {"features": [...]}                 one row
  {"features": [[...], ...]}          several rows
  {"records": [{name: value}, ...]}   rows keyed by feature name (also {"data": [{...}, ...]})
  {"instances": ...}                  same as "data" (TF-Serving / MLflow style)

Every problem is reported with where it is (row, feature) so that a caller can fix the request
without reading server logs.
"""

from __future__ import annotations

from typing import Any

from model_server.feature_spec import STRING, FeatureSpec

_ROW_KEYS = ("data", "instances", "features", "records")


class InputError(ValueError):
    """The request body does not fit the model; the message names the problem."""


def rows_from_body(body: Any, features: FeatureSpec) -> list[list[Any]]:
    """Validated rows (lists of feature values in the model's column order)."""
    if not isinstance(body, dict):
        raise InputError(
            "request body must be a JSON object with one of 'data', 'features' or 'records'"
        )
    present = [key for key in _ROW_KEYS if key in body]
    if not present:
        raise InputError("request body needs one of 'data', 'features' or 'records'")
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


def rows_from_lists(rows: list[Any], features: FeatureSpec, key: str = "data") -> list[list[Any]]:
    """Check each row is a list of the right length with values of the right kind."""
    expected = features.count
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(
                f"{key!r} row {index} must be a list of feature values, got {type(row).__name__}"
            )
        if expected is None:
            expected = len(row)
        if len(row) != expected:
            raise InputError(
                f"wrong feature count: row {index} has {len(row)} values, "
                f"the model expects {expected}"
                + (f" ({', '.join(features.names)})" if features.names else "")
            )
        if not row:
            raise InputError(f"row {index} has no feature values")
        for column, item in enumerate(row):
            _check_value(item, features, index, column)
    return rows


def rows_from_records(
    records: list[Any], features: FeatureSpec, key: str = "records"
) -> list[list[Any]]:
    """Records keyed by feature name → rows in the model's column order."""
    if features.names is None:
        raise InputError(
            "this model does not know its feature names; send rows as lists "
            '(e.g. {"data": [[...]]})'
        )
    names = features.names
    wanted = set(names)
    rows: list[list[Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(
                f"{key!r} row {index} must be an object keyed by feature name, "
                f"got {type(record).__name__}"
            )
        missing = [n for n in names if n not in record]
        if missing:
            raise InputError(f"row {index} is missing features: {', '.join(missing)}")
        unknown = sorted(set(record) - wanted)
        if unknown:
            raise InputError(
                f"row {index} has unknown features: {', '.join(unknown)} "
                f"(the model expects {', '.join(names)})"
            )
        row = [record[n] for n in names]
        for column, item in enumerate(row):
            _check_value(item, features, index, column)
        rows.append(row)
    return rows


def _check_value(item: Any, features: FeatureSpec, row: int, column: int) -> None:
    where = f"row {row}, feature " + (
        repr(features.names[column]) if features.names else f"{column}"
    )
    if features.kind(column) == STRING:
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise InputError(f"{where}: expected a string, got {_describe(item)}")
        return
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise InputError(f"non-numeric value at {where}: {_describe(item)}")


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 40 else text[:37] + "..."
