"""The versions a replica serves, swapped atomically.

A request looks its model up once and keeps that object to the end, so it is answered by exactly
one version even when a swap lands mid-request; the previous version stays alive until the last
request holding it returns. Replacing a dict entry is a single reference assignment under the
GIL, so readers never see a half-made state.

Beside each served version (the champion) a challenger may run (mlops_core/canary.py): it is
kept with its canary settings as one `Challenger` object, swapped the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops_core.canary import CanaryConfig
from mlops_core.model_names import model_name_problem
from model_server.loaded_model import LoadedModel

# Answer (503) for a model not in the store while the first sync with the registry runs: it may
# well be served a moment later, so "not served" (404) would be wrong and final-sounding.
LOADING = "model server is loading its models from the registry"


@dataclass(frozen=True)
class LoadFailure:
    """The last failed load of a model (the previous version, if any, kept serving)."""

    version: str
    error: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Challenger:
    """A version running beside the champion, and how it takes part (weight, mode, sticky key)."""

    model: LoadedModel
    config: CanaryConfig


class ModelStore:
    """Model name → the LoadedModel that answers its requests, plus the last load failures."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._challengers: dict[str, Challenger] = {}
        self._failures: dict[str, LoadFailure] = {}

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def challenger(self, name: str) -> Challenger | None:
        return self._challengers.get(name)

    def set_challenger(self, name: str, challenger: Challenger | None) -> Challenger | None:
        """Run `challenger` beside `name`'s champion from now on (None: none); returns the one
        it replaced."""
        previous = self._challengers.get(name)
        if challenger is None:
            self._challengers.pop(name, None)
        else:
            self._challengers[name] = challenger
        return previous

    def names(self) -> list[str]:
        return sorted(self._models)

    def loaded(self) -> list[LoadedModel]:
        """Every loaded version: champions and challengers."""
        return [*self._models.values(), *(c.model for c in self._challengers.values())]

    def swap_in(self, model: LoadedModel) -> LoadedModel | None:
        """Serve `model` from now on; returns the version it replaced."""
        previous = self._models.get(model.name)
        self._models[model.name] = model
        self._failures.pop(model.name, None)
        return previous

    def remove(self, name: str) -> LoadedModel | None:
        """Stop serving `name`."""
        self._failures.pop(name, None)
        return self._models.pop(name, None)

    def record_failure(self, name: str, version: str, error: str) -> None:
        self._failures[name] = LoadFailure(version, error)

    def failure(self, name: str) -> LoadFailure | None:
        return self._failures.get(name)

    def describe(self) -> list[dict[str, Any]]:
        """Rows for GET /models: what is served, how much it was used, what failed."""
        rows: list[dict[str, Any]] = []
        for name in sorted(set(self._models) | set(self._failures)):
            model = self._models.get(name)
            failure = self._failures.get(name)
            challenger = self._challengers.get(name)
            rows.append(
                {
                    "name": name,
                    "version": model.version if model else None,
                    "loaded_at": model.loaded_at.isoformat() if model else None,
                    "requests": model.requests if model else 0,
                    "flavor": model.flavor if model else None,
                    "feature_names": list(model.features.names)
                    if model and model.features.names
                    else None,
                    "n_features": model.features.count if model else None,
                    "classes": model.classes if model else None,
                    "last_error": (
                        {
                            "version": failure.version,
                            "error": failure.error,
                            "at": failure.at.isoformat(),
                        }
                        if failure
                        else None
                    ),
                    "challenger": (
                        {
                            "version": challenger.model.version,
                            "mode": challenger.config.mode.value,
                            "weight": challenger.config.weight,
                            "sticky_key": challenger.config.sticky_key,
                            "requests": challenger.model.requests,
                        }
                        if challenger
                        else None
                    ),
                }
            )
        return rows


def why_not_served(store: ModelStore, name: str, *, loading: bool) -> tuple[int, str]:
    """Status and message for a model `store` does not serve: 404, or 503 when it may come.

    `loading`: the first sync with the registry has not finished. A name the registry cannot
    hold is a 404 even then.
    """
    problem = model_name_problem(name)
    if problem is not None:
        return 404, f"model {name!r} is not served: {problem}"
    failure = store.failure(name)
    if failure is not None:
        return 503, f"model {name} is not loaded: version {failure.version} failed: {failure.error}"
    if loading:
        return 503, LOADING
    return 404, f"model {name!r} is not served (unknown or not deployed)"
