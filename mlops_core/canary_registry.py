"""Where a canary lives in the MLflow registry, read by model servers and written by the platform.

What a model serves is read from its registered model in one call: the serving alias names the
champion, the challenger alias and the canary tag (mlops_core/canary.py) the challenger. A
challenger counts only when tag and alias name the same version and it is not the champion, so
every partial state between two writes reads as "the champion alone":

- starting writes the tag, then the alias;
- ending (abort) removes the alias, then the tag;
- promoting moves the serving alias to the challenger first (challenger = champion: no
  canary), then ends the canary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_core.canary import CanaryConfig, canary_tag
from mlops_core.model_registry import not_found

_PAGE = 200


@dataclass(frozen=True)
class Serving:
    """What one model serves: its champion, and a challenger beside it when one runs."""

    champion: str | None
    canary: CanaryConfig | None = None


def serving_of(model: Any, serving_alias: str, challenger_alias: str) -> Serving:
    """The serving state a registered model entity (aliases and tags) describes."""
    aliases = {key: str(value) for key, value in (model.aliases or {}).items()}
    tags = model.tags or {}
    champion = aliases.get(serving_alias)
    config = CanaryConfig.from_tag(tags.get(canary_tag(challenger_alias)))
    challenger = aliases.get(challenger_alias)
    if (
        champion is None
        or config is None
        or challenger is None
        or config.version != challenger
        or challenger == champion
    ):
        return Serving(champion)
    return Serving(champion, config)


def serving_state(
    client: MlflowClient, name: str, serving_alias: str, challenger_alias: str
) -> Serving:
    """One model's serving state (nothing served when the model does not exist)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            return Serving(None)
        raise
    return serving_of(model, serving_alias, challenger_alias)


def all_serving(
    client: MlflowClient, serving_alias: str, challenger_alias: str
) -> dict[str, Serving]:
    """Model name → serving state, for every registered model carrying the serving alias."""
    found: dict[str, Serving] = {}
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=_PAGE, page_token=token)
        for model in page:
            state = serving_of(model, serving_alias, challenger_alias)
            if state.champion is not None:
                found[model.name] = state
        token = page.token
        if not token:
            return found


def canaries(client: MlflowClient, serving_alias: str, challenger_alias: str) -> dict[str, Serving]:
    """Model name → serving state, for every model with a challenger running."""
    return {
        name: state
        for name, state in all_serving(client, serving_alias, challenger_alias).items()
        if state.canary is not None
    }


def set_canary(
    client: MlflowClient, name: str, config: CanaryConfig, challenger_alias: str
) -> None:
    """Make `config.version` the challenger (tag first: see the module's docstring)."""
    client.set_registered_model_tag(name, canary_tag(challenger_alias), config.to_tag())
    client.set_registered_model_alias(name, challenger_alias, config.version)


def clear_canary(client: MlflowClient, name: str, challenger_alias: str) -> None:
    """End the canary (alias first: see the module's docstring); nothing to end is fine."""
    for remove in (
        lambda: client.delete_registered_model_alias(name, challenger_alias),
        lambda: client.delete_registered_model_tag(name, canary_tag(challenger_alias)),
    ):
        try:
            remove()
        except MlflowException as exc:
            if not not_found(exc):
                raise
