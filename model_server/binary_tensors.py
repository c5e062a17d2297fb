"""The Open Inference Protocol's binary tensor data extension, both ways.

Triton's and KServe's HTTP clients send tensors as raw bytes by default (`binary_data=True`):
the body is the JSON request, whose length the `Inference-Header-Content-Length` header gives,
followed by each binary input's bytes in the order of `inputs`, each sized by its
`binary_data_size` parameter. Values are little-endian, row-major, of the datatype's native size
(BOOL one byte; BYTES each a 4-byte little-endian length and the bytes). Answers use the same
framing for the outputs asked for with `"binary_data": true` (or all of them with the request
parameter `"binary_data_output": true`).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from model_server.inference_errors import Failure, InferenceError
from model_server.request_rows import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
MEDIA_TYPE = "application/octet-stream"

# The numpy dtype of each fixed-size datatype, little-endian as the extension says.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part of a body and the binary data after it (none without the header)."""
    if header_length is None:
        return raw, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit() or int(text) > len(raw):
        raise InferenceError(
            Failure.MALFORMED,
            f"{HEADER_LENGTH} is {header_length!r}: it must be the length in bytes of the "
            f"JSON that starts the body ({len(raw)} bytes)",
        )
    length = int(text)
    return raw[:length], memoryview(raw)[length:]


def tensor_values(data: memoryview, datatype: str, count: int, name: str) -> Any:
    """The `count` values of input `name` sent as binary: a numpy array, or strings (BYTES)."""
    if datatype == "BYTES":
        return _strings(data, count, name)
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    if len(data) != count * dtype.itemsize:
        raise InputError(
            f"input '{name}': {count} {datatype} values are {count * dtype.itemsize} bytes, "
            f"binary_data_size says {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype)


def tensor_bytes(values: Any, datatype: str) -> bytes:
    """Output values as the extension's bytes."""
    if datatype == "BYTES":
        encoded = [str(v).encode() if not isinstance(v, bytes) else v for v in values]
        return b"".join(_LENGTH.pack(len(item)) + item for item in encoded)
    return np.asarray(values, dtype=NUMPY_DTYPES[datatype]).tobytes()


def _strings(data: memoryview, count: int, name: str) -> list[str]:
    values: list[str] = []
    position = 0
    for index in range(count):
        if position + 4 > len(data):
            raise InputError(f"input '{name}': binary data ends before element {index}")
        (length,) = _LENGTH.unpack_from(data, position)
        position += 4
        if position + length > len(data):
            raise InputError(f"input '{name}': element {index} runs past the binary data")
        try:
            values.append(bytes(data[position : position + length]).decode())
        except UnicodeDecodeError:
            raise InputError(f"input '{name}': element {index} is not UTF-8 text") from None
        position += length
    if position != len(data):
        raise InputError(
            f"input '{name}': {len(data) - position} bytes of binary data after {count} elements"
        )
    return values
