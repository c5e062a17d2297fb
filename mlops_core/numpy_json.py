"""orjson's fallback for numpy values it does not write itself, shared by every writer.

orjson writes numeric and boolean arrays directly (OPT_SERIALIZE_NUMPY); arrays of objects or
strings (a model with text features), and numpy scalars of those kinds, go through `as_lists`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_lists(value: Any) -> Any:
    """`default=` for orjson.dumps: numpy values as Python lists or scalars."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
