"""The inference path, once for every protocol (as MLServer's handlers/dataplane.py).

`/predict/{name}`, the Open Inference Protocol and MLflow's `/invocations` differ only in how a
body becomes rows and how an answer becomes a body: each brings a codec for that, and its routes
only translate HTTP to a call here and an InferenceError to its protocol's error shape. Everything
else happens here, the same way for all: the token, which version answers, reading the body,
validating it against that version, batching into its model process, counting (Prometheus),
the prediction log, and the one status each failure gets (model_server/inference_errors.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlops_core.access_tokens import CHALLENGE, PREDICT, refusal
from mlops_core.access_tokens import bearer_token as bearer
from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_log import request_id as new_request_id
from mlops_core.settings import Settings
from model_server.feature_spec import FeatureSpec
from model_server.inference_errors import Failure, InferenceError
from model_server.loaded_model import LoadedModel, Prediction
from model_server.metrics import record_error, record_prediction
from model_server.model_process import ModelProcessError
from model_server.model_store import LOADING, ModelStore, why_not_served
from model_server.prediction_log import PredictionLog
from model_server.request_rows import InputError, Rows

# Bodies larger than this are parsed, and their answers written, in a worker thread: parsing
# a 10 MB body takes tens of milliseconds, which other requests would otherwise wait through.
INLINE_BODY_BYTES = 256 * 1024


class ServedModel(Protocol):
    """What a codec reads of the version a request reached."""

    name: str
    version: str
    flavor: str
    features: FeatureSpec
    classes: list[Any] | None
    has_proba: bool


@dataclass
class Decoded:
    """A request as the data plane runs it."""

    rows: Rows
    probabilities: bool = True  # whether the answer shows probabilities (else not computed)
    context: Any = None  # what the protocol's encoder needs back (requested outputs, ...)


@dataclass
class Answer:
    """A prediction, for the protocol's encoder."""

    model: ServedModel
    request_id: str
    prediction: Prediction
    decoded: Decoded
    started: float  # time.perf_counter() when the prediction started


@dataclass
class Encoded:
    """A protocol's answer body and what to send with it."""

    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


class Codec(Protocol):
    """How one protocol reads requests and writes answers; transport-free (bytes in, bytes out).

    `parse` reads the body (and names the request when the body can: V2's `id`), `decode` turns
    it into rows for one version; both raise InputError or InferenceError.
    """

    def parse(self, raw: bytes) -> tuple[Any, str | None]: ...

    def decode(self, body: Any, model: ServedModel) -> Decoded: ...

    def encode(self, answer: Answer) -> Encoded: ...


class DataPlane:
    """The model server's inference logic, shared by every protocol's routes."""

    def __init__(
        self, settings: Settings, store: ModelStore, log: PredictionLog, ready: asyncio.Event
    ) -> None:
        self.settings = settings
        self._store = store
        self._log = log
        self._ready = ready

    @property
    def is_ready(self) -> bool:
        """Whether the first sync with the registry is done (every served version loaded)."""
        return self._ready.is_set()

    def authorize(self, authorization: str | None) -> None:
        """InferenceError(401) unless the Authorization header carries PREDICT_TOKEN (or the
        admin token), or no such token is set."""
        refused = refusal(self.settings, PREDICT, bearer(authorization))
        if refused is not None:
            raise InferenceError(Failure.UNAUTHORIZED, refused.http_detail, headers=CHALLENGE)

    def served(self, name: str, version: str | None = None) -> LoadedModel:
        """The version that answers a request for `name` (looked up once per request), or why
        none does. `version`: the caller asks for that one (V2's versioned paths).

        The one place that decides which version answers.
        """
        model = self._store.get(name)
        if model is None:
            status, message = why_not_served(self._store, name, loading=not self.is_ready)
            raise InferenceError(
                Failure.NOT_LOADED if status == 503 else Failure.NOT_SERVED, message
            )
        if version is not None and version != model.version:
            failure = self._store.failure(name)
            if failure is not None and failure.version == version:
                # The registry serves it, this replica could not load it: unavailable, not unknown.
                raise InferenceError(
                    Failure.NOT_LOADED,
                    f"model '{name}' version {version} is not loadable: {failure.error}",
                )
            raise InferenceError(
                Failure.NOT_SERVED,
                f"model '{name}' version {version} is not served here (serving {model.version})",
            )
        return model

    def only_model(self) -> str:
        """The name of the one model this server serves (MLflow's `/invocations` names none)."""
        names = self._store.names()
        if len(names) == 1:
            return names[0]
        if not names:
            if not self.is_ready:
                raise InferenceError(Failure.NOT_LOADED, LOADING)
            raise InferenceError(Failure.NOT_SERVED, "this model server serves no model yet")
        raise InferenceError(
            Failure.NOT_SERVED,
            f"this model server serves {len(names)} models ({', '.join(names)}): "
            "POST /models/{name}/invocations names the one to ask",
        )

    async def infer(
        self,
        name: str,
        version: str | None,
        codec: Codec,
        read_body: Callable[[], Awaitable[bytes]],
        *,
        authorization: str | None,
        presented_id: str | None,
    ) -> Encoded:
        """Answer one inference request; InferenceError says why not (with the request's id
        once it reached a served version)."""
        self.authorize(authorization)
        model = self.served(name, version)
        request_id = new_request_id(presented_id)
        with model.hold():
            try:
                raw = await read_body()
                heavy = len(raw) > INLINE_BODY_BYTES
                body, named = await _run(heavy, codec.parse, raw)
                if named:
                    request_id = new_request_id(named)
                decoded = await _run(heavy, codec.decode, body, model)
            except InputError as exc:
                raise self._failed(
                    model, request_id, InferenceError(Failure.BAD_INPUT, str(exc))
                ) from None
            except InferenceError as exc:
                raise self._failed(model, request_id, exc) from None
            model.requests += 1
            started = time.perf_counter()
            try:
                prediction = await model.predict_batched(decoded.rows, decoded.probabilities)
            except ModelProcessError as exc:
                message = f"model {model.name} version {model.version} is unavailable: {exc}"
                raise self._failed(
                    model, request_id, InferenceError(Failure.UNAVAILABLE, message)
                ) from None
            except Exception as exc:
                message = (
                    f"model {model.name} version {model.version} could not predict these rows: "
                    f"{exc}"
                )
                raise self._failed(
                    model, request_id, InferenceError(Failure.MODEL_ERROR, message)
                ) from None
            seconds = time.perf_counter() - started
            record_prediction(model.name, model.version, seconds)
        self._log.record(
            request_id,
            model.name,
            model.version,
            model.features.names,
            decoded.rows,
            prediction.predictions,
            prediction.probabilities,
            round(seconds * 1000, 3),
        )
        answer = Answer(model, request_id, prediction, decoded, started)
        encoded = await _run(heavy, codec.encode, answer)
        encoded.headers[REQUEST_ID_HEADER] = request_id
        return encoded

    def _failed(self, model: LoadedModel, request_id: str, error: InferenceError) -> InferenceError:
        """Count a failed request to a served version and log it (the model page's error rate
        per version); the error then carries the request's id, for the caller to report."""
        reason = error.failure.reason
        if reason is not None:
            record_error(model.name, reason)
            self._log.record_error(request_id, model.name, model.version, reason, error.status)
        error.request_id = request_id
        error.headers[REQUEST_ID_HEADER] = request_id
        return error


async def _run(in_thread: bool, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)`, in a worker thread when it is heavy enough to hold up the event loop."""
    if in_thread:
        return await asyncio.to_thread(function, *args)
    return function(*args)
