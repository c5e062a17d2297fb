"""What a model expects per row, as the server validates requests against it.

Shared by both sides of the model process boundary: the model process works it out from the
loaded estimator, and the server validates requests with it without touching the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NUMBER = "number"
STRING = "string"


@dataclass(frozen=True)
class FeatureSpec:
    """How many features a row has, their names and kinds when known."""

    count: int | None
    names: tuple[str, ...] | None
    kinds: tuple[str, ...] | None = None

    def kind(self, column: int) -> str:
        """NUMBER unless the signature says the column holds strings."""
        if self.kinds is None or column >= len(self.kinds):
            return NUMBER
        return self.kinds[column]

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "names": list(self.names) if self.names is not None else None,
            "kinds": list(self.kinds) if self.kinds is not None else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> FeatureSpec:
        """Read what a model process reported, checking its shape (the process is untrusted)."""
        if not isinstance(data, dict):
            raise ValueError("feature spec is not an object")
        count, names, kinds = data.get("count"), data.get("names"), data.get("kinds")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise ValueError("feature count is not an integer")
        for values in (names, kinds):
            if values is not None and not (
                isinstance(values, list) and all(isinstance(v, str) for v in values)
            ):
                raise ValueError("feature names and kinds must be lists of strings")
        if kinds is not None and not set(kinds) <= {NUMBER, STRING}:
            raise ValueError(f"feature kinds must be {NUMBER!r} or {STRING!r}")
        return cls(
            count=count,
            names=tuple(names) if names is not None else None,
            kinds=tuple(kinds) if kinds is not None else None,
        )
