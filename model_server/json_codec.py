"""JSON in and out of the model server: orjson, with the standard library only to explain refusals.

orjson parses and writes several times faster than the json module and writes numpy arrays
directly, which matters for a 1,000-row request. It refuses what JSON does not allow, `NaN`,
`Infinity` and numbers too large for a double, like any other malformed body; such a body is
then read again with the json module, whose hooks say which value was not finite (422) rather
than only that the body is not JSON (400). That second read happens for refused bodies only.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from model_server.inference_errors import Failure, InferenceError

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """`value` as JSON bytes; numpy arrays and scalars included."""
    return orjson.dumps(value, option=_DUMP_OPTIONS)


def loads(raw: bytes) -> Any:
    """The parsed body, or InferenceError naming why it cannot be (400, or 422 for a number that
    is not finite)."""
    if not raw.strip():
        raise InferenceError(Failure.MALFORMED, "request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    return _explain_refusal(raw)


class _NonFinite(ValueError):
    """A number that is not finite: `NaN`, `Infinity`, `-Infinity`, or one too large."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a number JSON allows; send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"{text} is too large to be a finite number")
    return value


def _explain_refusal(raw: bytes) -> Any:
    """Read a body orjson refused with the json module, to name the problem.

    The json module also reads JSON in UTF-16 and UTF-32, which orjson does not: such a body
    is answered normally.
    """
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise InferenceError(
            Failure.BAD_INPUT, f"request body has a non-finite number: {exc}"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InferenceError(Failure.MALFORMED, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InferenceError(
            Failure.MALFORMED, "request body is nested too deeply to be read"
        ) from None
