"""One registered model version ready to predict, as the server holds it.

The model itself lives in a sandboxed model process (model_server/model_process.py); this
object holds what requests are validated against (features, classes), forwards predictions to
the process, and checks every answer it gets back, since the process runs the repository's
code. Loading downloads the version's artifacts while the process imports its libraries, then
has the process load and warm the model: a broken artifact fails here, while the previous
version is still serving, not on a user's request.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow

from mlops_core.settings import Settings, get_settings
from model_server.batching import Batcher
from model_server.feature_spec import FeatureSpec
from model_server.model_process import ModelProcess, ModelProcessError, SpareProcesses
from model_server.request_rows import Rows

log = logging.getLogger(__name__)

FLAVORS = ("sklearn", "pyfunc")
# Numeric rows go to the model process as raw bytes, not JSON (model_server/model_channel.py).
ROWS_ATTACHED = ("rows",)


class ModelLoadError(Exception):
    """The model process could not load or warm the version; the message says why."""


@dataclass
class Prediction:
    """A prediction's outputs as plain Python values (JSON-ready)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None


@dataclass(frozen=True)
class ModelDescription:
    """What the model process reported after loading, checked for shape."""

    flavor: str
    features: FeatureSpec
    classes: list[Any] | None
    has_proba: bool

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> ModelDescription:
        flavor, classes = reply.get("flavor"), reply.get("classes")
        has_proba = reply.get("has_proba")
        if flavor not in FLAVORS or not isinstance(has_proba, bool):
            raise ModelProcessError("the model process described the model outside the protocol")
        if classes is not None and not isinstance(classes, list):
            raise ModelProcessError("the model process sent classes that are not a list")
        try:
            features = FeatureSpec.from_json(reply.get("features"))
        except ValueError as exc:
            raise ModelProcessError(f"the model process sent a bad feature spec: {exc}") from None
        return cls(flavor, features, classes, has_proba)


class LoadedModel:
    """A served version: the folder its artifacts are in and the process that predicts.

    Requests `hold()` it from the moment they look it up until they answer; a version swapped
    out is `retire()`d and its process stopped once the last request holding it is done.
    """

    def __init__(
        self,
        name: str,
        version: str,
        settings: Settings,
        folder: Path,
        model_path: Path,
        process: ModelProcess,
        description: ModelDescription,
    ) -> None:
        self.name = name
        self.version = version
        self.flavor = description.flavor
        self.features = description.features
        self.classes = description.classes
        self.has_proba = description.has_proba
        self.loaded_at = datetime.now(UTC)
        self.requests = 0
        self._settings = settings
        self._folder = folder
        self._model_path = model_path
        self._process: ModelProcess | None = process
        self._channel = threading.Lock()
        self._holds = 0
        self._retired = False
        self._batcher = Batcher(
            self.predict,
            _rows_of,
            max_rows=settings.max_batch_size,
            max_delay_seconds=settings.max_batch_delay_ms / 1000,
            name=f"{name}-{version}",
        )

    async def predict_batched(self, rows: Rows, probabilities: bool = True) -> Prediction:
        """Predict on the event loop's side: batched with concurrent requests (batching.py).
        `probabilities`: whether the answer needs them (else the process may skip them)."""
        prediction: Prediction = await self._batcher.predict(rows, probabilities)
        return prediction

    def predict(self, rows: Rows, probabilities: bool = True) -> Prediction:
        """Predict validated rows (blocking: runs in a worker thread, never on the event loop).

        Raises ValueError for rows the model refuses (a client error) and ModelProcessError
        when the process fails (restarted on the next request).
        """
        message = {"op": "predict", "rows": rows, "probabilities": probabilities}
        with self._channel:
            process = self._running_process()
            reply = process.ask(message, self._settings.predict_timeout_seconds, ROWS_ATTACHED)
        if not reply["ok"]:
            raise ValueError(str(reply.get("error", "the model failed")))
        return self._checked(reply, len(rows))

    def _running_process(self) -> ModelProcess:
        """The process, started again (and the model loaded again) if it died."""
        if self._process is not None and self._process.alive:
            return self._process
        if self._retired:
            raise ModelProcessError(f"version {self.version} of {self.name} was swapped out")
        log.warning("model process of %s v%s is gone; restarting it", self.name, self.version)
        process = ModelProcess(self._settings, self._folder)
        try:
            _load_in(process, self._model_path, self._settings)
        except BaseException:
            process.stop(graceful=False)
            raise
        self._process = process
        return process

    def _checked(self, reply: dict[str, Any], count: int) -> Prediction:
        predictions, probabilities = reply.get("predictions"), reply.get("probabilities")
        if not isinstance(predictions, list) or len(predictions) != count:
            raise ModelProcessError(f"the model process answered for other than {count} rows")
        if probabilities is not None and not (
            isinstance(probabilities, list)
            and len(probabilities) == count
            and all(isinstance(row, list) for row in probabilities)
        ):
            raise ModelProcessError("the model process sent probabilities of the wrong shape")
        return Prediction(predictions, probabilities, self.classes)

    @contextlib.contextmanager
    def hold(self) -> Iterator[LoadedModel]:
        """Keep this version's process alive while a request uses it (event-loop side)."""
        self._holds += 1
        try:
            yield self
        finally:
            self._holds -= 1
            if self._retired and self._holds == 0:
                self._stop_in_background()

    def retire(self) -> None:
        """No new request will get this version: stop it once the last one holding it ends."""
        self._retired = True
        if self._holds == 0:
            self._stop_in_background()

    def close(self) -> None:
        """Stop the process now and remove the artifacts (blocking)."""
        self._retired = True
        self._batcher.close()
        with self._channel:
            if self._process is not None:
                self._process.stop()
                self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def _stop_in_background(self) -> None:
        threading.Thread(target=self.close, name=f"stop-{self.name}", daemon=True).start()


def _rows_of(prediction: Prediction, start: int, end: int, probabilities: bool) -> Prediction:
    """One request's share of a batched prediction (probabilities only if it asked)."""
    batch = prediction.probabilities
    if start == 0 and end == len(prediction.predictions):
        return (
            prediction
            if probabilities or batch is None
            else replace(prediction, probabilities=None)
        )
    return Prediction(
        prediction.predictions[start:end],
        batch[start:end] if batch is not None and probabilities else None,
        prediction.classes,
    )


def _load_in(process: ModelProcess, local: Path, settings: Settings) -> ModelDescription:
    reply = process.ask({"op": "load", "path": str(local)}, settings.model_load_timeout_seconds)
    if not reply["ok"]:
        raise ModelLoadError(str(reply.get("error", "the model process could not load it")))
    return ModelDescription.from_reply(reply)


def load_version(
    name: str,
    version: str,
    tracking_uri: str,
    cache_dir: Path,
    settings: Settings | None = None,
    spares: SpareProcesses | None = None,
) -> LoadedModel:
    """Download `models:/name/version` and load it in a model process; raises on failure.

    The process is a spare that has done its imports already when `spares` is given; else it
    is started first, so that its imports overlap the download.
    """
    settings = settings or get_settings()
    started = time.monotonic()
    process: ModelProcess | None = None
    folder: Path | None = None
    try:
        if spares is not None:
            process, folder = spares.take()
        else:
            folder = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=cache_dir))
            process = ModelProcess(settings, folder)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(folder),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
        description = _load_in(process, local, settings)
    except BaseException:
        if process is not None:
            process.stop(graceful=False)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info(
        "loaded %s version %s (%s, %d features) in a model process in %.2fs",
        name,
        version,
        description.flavor,
        description.features.count or -1,
        time.monotonic() - started,
    )
    return LoadedModel(name, version, settings, folder, local, process, description)
