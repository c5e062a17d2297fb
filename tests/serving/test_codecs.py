"""The data plane's transport-free pieces: request rows, JSON, and each protocol's codec.

Binary answers are read back with tritonclient's own response parser, so the framing is checked
against the client users run, not against our own reader.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server.data_plane import Answer, Decoded
from model_server.feature_spec import FeatureSpec
from model_server.inference_errors import Failure, InferenceError
from model_server.json_codec import loads
from model_server.loaded_model import Prediction
from model_server.mlflow_codec import MlflowCodec
from model_server.oip_codec import OipCodec
from model_server.predict_codec import PredictCodec
from model_server.request_rows import InputError, rows_from_body, rows_from_lists

NAMES = ("a", "b", "c")
NAMED = FeatureSpec(count=3, names=NAMES)
ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]


@dataclass
class Version:
    """What a codec reads of a served version."""

    features: FeatureSpec = NAMED
    name: str = "m"
    version: str = "3"
    flavor: str = "sklearn"
    classes: list[Any] | None = None
    has_proba: bool = True

    def __post_init__(self) -> None:
        self.classes = self.classes if self.classes is not None else ["x", "y"]


def decode(codec: Any, raw: bytes, model: Version | None = None) -> Decoded:
    body, _ = codec.parse(raw)
    return codec.decode(body, model or Version())


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.floats(-1e9, 1e9) | st.integers(-(10**9), 10**9), min_size=3, max_size=3),
        min_size=1,
        max_size=30,
    ),
    bad=st.sampled_from([True, None, "7", [1.0], {"k": 1}]),
    data=st.data(),
)
def test_numbers_become_one_matrix_and_any_other_value_is_named_where_it_is(
    rows: list[list[Any]], bad: Any, data: st.DataObject
) -> None:
    matrix = rows_from_lists(rows, NAMED)
    assert isinstance(matrix, np.ndarray) and matrix.tolist() == [
        [float(v) for v in r] for r in rows
    ]
    row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(0, 2))
    spoiled = [list(r) for r in rows]
    spoiled[row][column] = bad
    with pytest.raises(InputError, match=f"row {row}, feature '{NAMES[column]}'"):
        rows_from_lists(spoiled, NAMED)


def test_rows_of_another_width_are_named() -> None:
    with pytest.raises(InputError, match="row 1 has 2 values, the model expects 3"):
        rows_from_lists([[1, 2, 3], [1, 2]], NAMED)
    with pytest.raises(InputError, match="wrong feature count: row 0 has 4 values"):
        rows_from_lists([[1, 2, 3, 4]], NAMED)


def test_records_and_a_flat_row_become_rows_in_the_models_order() -> None:
    records = [{"c": 3, "a": 1, "b": 2}, {"b": 5, "c": 6, "a": 4}]
    assert rows_from_body({"records": records}, NAMED).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert rows_from_body({"c": 3, "a": 1, "b": 2}, NAMED).tolist() == [[1, 2, 3]]
    with pytest.raises(InputError, match="row 0 is missing features: c"):
        rows_from_body({"a": 1, "b": 2}, NAMED)
    with pytest.raises(InputError, match="needs one of 'data', 'features' or 'records'"):
        rows_from_body({"a": 1}, FeatureSpec(count=1, names=None))


def test_json_refusals_say_why_with_their_status() -> None:
    with pytest.raises(InferenceError) as refused:
        loads(b'{"data": [[NaN, 1]]}')
    assert refused.value.failure is Failure.BAD_INPUT and "NaN" in refused.value.message
    with pytest.raises(InferenceError) as huge:
        loads(b'{"data": [[1e999]]}')
    assert huge.value.status == 422 and "1e999" in huge.value.message
    with pytest.raises(InferenceError) as garbled:
        loads(b"{not json")
    assert garbled.value.status == 400 and "not valid JSON" in garbled.value.message
    # orjson reads UTF-8 only; the standard library's reading takes over for UTF-16.
    assert loads('{"data": [[1]]}'.encode("utf-16")) == {"data": [[1]]}


def test_every_protocol_decodes_the_same_rows() -> None:
    records = [dict(zip(NAMES, row, strict=True)) for row in ROWS]
    flat = [v for row in ROWS for v in row]
    tensor = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": flat}]}
    decoded = [
        decode(PredictCodec(), json.dumps({"data": ROWS}).encode()),
        decode(PredictCodec(), json.dumps({"records": records}).encode()),
        decode(OipCodec(), json.dumps(tensor).encode()),
        decode(MlflowCodec("application/json"), json.dumps({"inputs": ROWS}).encode()),
        decode(
            MlflowCodec("application/json; charset=utf-8"),
            json.dumps(
                {
                    "dataframe_split": {
                        "columns": ["c", "a", "b"],
                        "data": [[3.0, 1.0, 2.0], [6.5, 4.0, 5.0]],
                    }
                }
            ).encode(),
        ),
        decode(MlflowCodec(None), json.dumps({"dataframe_records": records}).encode()),
        decode(
            MlflowCodec(None),
            json.dumps({"instances": {"b": [2.0, 5.0], "a": [1.0, 4.0], "c": [3.0, 6.5]}}).encode(),
        ),
    ]
    for each in decoded:
        assert np.asarray(each.rows).tolist() == ROWS
    # Probabilities: asked for by default on /predict, never by MLflow's protocol.
    assert [d.probabilities for d in decoded] == [True, True, True, False, False, False, False]


def test_oip_binary_inputs_and_outputs_read_by_tritonclient() -> None:
    from tritonclient.http import InferResult

    header = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                }
            ],
            "outputs": [
                {"name": "predict", "parameters": {"binary_data": True}},
                {"name": "predict_proba", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    raw = header + np.asarray(ROWS, dtype="<f4").tobytes()
    codec = OipCodec(str(len(header)))
    body, named = codec.parse(raw)
    decoded = codec.decode(body, Version())
    assert named == "r1" and decoded.rows.tolist() == ROWS and decoded.probabilities
    prediction = Prediction(["x", "y"], [[0.75, 0.25], [0.125, 0.875]], ["x", "y"])
    encoded = codec.encode(Answer(Version(), "r1", prediction, decoded, time.perf_counter()))
    length = int(encoded.headers["Inference-Header-Content-Length"])
    result = InferResult.from_response_body(encoded.body, header_length=length)
    assert [v.decode() for v in result.as_numpy("predict")] == ["x", "y"]
    assert result.as_numpy("predict_proba").tolist() == [[0.75, 0.25], [0.125, 0.875]]
    assert result.get_response()["id"] == "r1"


def test_oip_binary_non_finite_values_are_refused_by_row_and_feature() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 48},
                }
            ]
        }
    ).encode()
    values = np.asarray(ROWS, dtype="<f8")
    values[1, 2] = np.inf
    with pytest.raises(InputError, match="non-finite value at row 1, feature 'c'"):
        decode(OipCodec(str(len(header))), header + values.tobytes())


def test_mlflow_codec_refuses_other_content_types() -> None:
    with pytest.raises(InferenceError) as refused:
        decode(MlflowCodec("text/csv"), b"a,b,c\n1,2,3\n")
    assert refused.value.status == 415
