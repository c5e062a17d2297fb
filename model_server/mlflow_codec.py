"""MLflow's scoring protocol (`mlflow models serve`'s `POST /invocations`) as a data-plane codec.

A client of MLflow's scoring server switches to this server by changing its URL: the body is a
JSON object with exactly one of `dataframe_split` ({"columns": [...], "data": [[...]]}),
`dataframe_records` ([{column: value}, ...]), `instances` or `inputs` (rows as lists, rows as
objects, or {column: [values]}); `params` is accepted and, as MLflow does for scikit-learn
models, not used. The answer is {"predictions": [...]}: what the model's `predict` returns,
without probabilities (which are then not computed).
"""

from __future__ import annotations

from typing import Any

from model_server.data_plane import Answer, Decoded, Encoded, ServedModel
from model_server.feature_spec import FeatureSpec
from model_server.inference_errors import Failure, InferenceError
from model_server.json_codec import dumps, loads
from model_server.request_rows import InputError, Rows, rows_from_lists, rows_from_records

DATAFRAME_SPLIT = "dataframe_split"
DATAFRAME_RECORDS = "dataframe_records"
INSTANCES = "instances"
INPUTS = "inputs"
FORMATS = (DATAFRAME_SPLIT, DATAFRAME_RECORDS, INSTANCES, INPUTS)
JSON = "application/json"


class MlflowCodec:
    """One request's codec; `content_type` is its Content-Type header."""

    def __init__(self, content_type: str | None) -> None:
        self._content_type = content_type

    def parse(self, raw: bytes) -> tuple[Any, str | None]:
        if self._content_type is not None:
            media, _, parameters = self._content_type.partition(";")
            charset = parameters.strip().lower().removeprefix("charset=").strip('"')
            if media.strip().lower() != JSON or charset not in ("", "utf-8"):
                raise InferenceError(
                    Failure.UNSUPPORTED_MEDIA,
                    f"content type {self._content_type!r} is not read here: send {JSON} (UTF-8) "
                    f"with one of {', '.join(FORMATS)}",
                )
        return loads(raw), None

    def body_object(self, body: Any) -> Any:
        return body

    def decode(self, body: Any, model: ServedModel) -> Decoded:
        if not isinstance(body, dict):
            raise InputError(
                f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}, "
                f"got {type(body).__name__}"
            )
        present = [key for key in FORMATS if key in body]
        if len(present) != 1:
            raise InputError(
                f"the body must have exactly one of {', '.join(FORMATS)}; it has "
                + (
                    ", ".join(present)
                    if present
                    else f"only {', '.join(map(repr, body)) or 'nothing'}"
                )
            )
        key = present[0]
        value = body[key]
        features = model.features
        if key == DATAFRAME_SPLIT:
            rows = _split_rows(value, features)
        elif key == DATAFRAME_RECORDS:
            if not isinstance(value, list) or not value:
                raise InputError(f"'{key}' must be a non-empty list of objects")
            rows = rows_from_records(value, features, key)
        else:
            rows = _tensor_rows(value, features, key)
        return Decoded(rows, probabilities=False)

    def encode(self, answer: Answer) -> Encoded:
        return Encoded(dumps({"predictions": answer.prediction.predictions}), JSON)


def _split_rows(value: Any, features: FeatureSpec) -> Rows:
    """pandas' "split" orientation: columns (optional) and rows; the index is not used."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InputError(f"'{DATAFRAME_SPLIT}' must be an object with 'data' (rows) and 'columns'")
    data, columns = value["data"], value.get("columns")
    if not data:
        raise InputError(f"empty batch: '{DATAFRAME_SPLIT}' has no rows")
    if columns is None or features.names is None or list(columns) == list(features.names):
        return rows_from_lists(data, features, DATAFRAME_SPLIT)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError(f"'{DATAFRAME_SPLIT}.columns' must be a list of column names")
    for index, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError(
                f"'{DATAFRAME_SPLIT}' row {index} must be a list of {len(columns)} values "
                "(one per column)"
            )
    return rows_from_records([dict(zip(columns, row, strict=True)) for row in data], features)


def _tensor_rows(value: Any, features: FeatureSpec, key: str) -> Rows:
    """TF Serving's forms: rows as lists or objects, or one list of values per column."""
    if isinstance(value, dict):
        return _column_rows(value, features, key)
    if not isinstance(value, list) or not value:
        raise InputError(f"'{key}' must be a non-empty list of rows or an object of columns")
    if isinstance(value[0], dict):
        return rows_from_records(value, features, key)
    return rows_from_lists(value, features, key)


def _column_rows(columns: dict[str, Any], features: FeatureSpec, key: str) -> Rows:
    if not columns or not all(isinstance(v, list) for v in columns.values()):
        raise InputError(f"'{key}' as an object must map each column to a list of values")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InputError(f"'{key}' columns have different numbers of values")
    if lengths == {0}:
        raise InputError(f"empty batch: '{key}' has no rows")
    if features.names is None:
        return rows_from_lists(
            [list(row) for row in zip(*columns.values(), strict=True)], features, key
        )
    names = list(columns)
    records = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return rows_from_records(records, features, key)
