"""The inference path, once for every protocol (as MLServer's handlers/dataplane.py).

`/predict/{name}`, the Open Inference Protocol and MLflow's `/invocations` differ only in how a
body becomes rows and how an answer becomes a body: each brings a codec for that, and its routes
only translate HTTP to a call here and an InferenceError to its protocol's error shape. Everything
else happens here, the same way for all: the token, which version answers, reading the body,
validating it against that version, batching into its model process, counting (Prometheus),
the prediction log, and the one status each failure gets (model_server/inference_errors.py).

Which version answers is decided in one place, `choose`: the served version (the champion),
or beside it a challenger (mlops_core/canary.py) for its weight of requests, by a hash of the
request's sticky key or id. In shadow mode the champion answers every request and the
challenger gets a copy of its share, predicted after the answer is sent, logged as a shadow
answer and never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlops_core.access_tokens import CHALLENGE, PREDICT, refusal
from mlops_core.access_tokens import bearer_token as bearer
from mlops_core.canary import CanaryMode, choose_version
from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_log import request_id as new_request_id
from mlops_core.settings import Settings
from model_server.feature_spec import FeatureSpec
from model_server.inference_errors import Failure, InferenceError
from model_server.loaded_model import LoadedModel, Prediction
from model_server.metrics import record_error, record_prediction, record_shadow_dropped
from model_server.model_process import ModelProcessError
from model_server.model_store import LOADING, Challenger, ModelStore, why_not_served
from model_server.prediction_log import PredictionLog
from model_server.request_rows import InputError, Rows

log = logging.getLogger(__name__)

# Bodies larger than this are parsed, and their answers written, in a worker thread: parsing
# a 10 MB body takes tens of milliseconds, which other requests would otherwise wait through.
INLINE_BODY_BYTES = 256 * 1024
# Shadow copies still predicting at once; past this, copies are dropped (and counted) rather
# than let a slow challenger pile up work behind the champion's answers.
MAX_SHADOW_COPIES = 256


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

    def body_object(self, body: Any) -> Any:
        """The JSON document of a parsed body, where a canary's sticky field is looked up."""
        ...

    def decode(self, body: Any, model: ServedModel) -> Decoded: ...

    def encode(self, answer: Answer) -> Encoded: ...


@dataclass(frozen=True)
class Candidates:
    """The versions one request may reach, looked up together once: a swap landing while the
    request runs changes neither."""

    champion: LoadedModel
    challenger: Challenger | None = None

    def models(self) -> list[LoadedModel]:
        return [self.champion] + ([self.challenger.model] if self.challenger else [])


class DataPlane:
    """The model server's inference logic, shared by every protocol's routes."""

    def __init__(
        self, settings: Settings, store: ModelStore, log: PredictionLog, ready: asyncio.Event
    ) -> None:
        self.settings = settings
        self._store = store
        self._log = log
        self._ready = ready
        self._shadow_copies: set[asyncio.Task[None]] = set()

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
        """The served version of `name`, or why there is none. `version`: the caller asks for
        that one (V2's versioned paths); a running challenger's version is served too."""
        model = self._store.get(name)
        if model is None:
            status, message = why_not_served(self._store, name, loading=not self.is_ready)
            raise InferenceError(
                Failure.NOT_LOADED if status == 503 else Failure.NOT_SERVED, message
            )
        running = self._store.challenger(name)
        if version is not None and running is not None and version == running.model.version:
            return running.model
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

    def candidates(self, name: str, version: str | None) -> Candidates:
        """What may answer a request for `name`: its served version and, unless the caller
        asked for a version, the challenger running beside it."""
        model = self.served(name, version)
        running = self._store.challenger(name) if version is None else None
        return Candidates(model, running if running and running.model is not model else None)

    def choose(
        self, candidates: Candidates, request_id: str, headers: Mapping[str, str], body: Any
    ) -> tuple[LoadedModel, LoadedModel | None]:
        """The version that answers this request, and the one that gets a shadow copy of it.

        The one place that decides which version answers: the champion, unless a challenger
        runs and the request falls in its weight (mlops_core/canary.py: `choose_version`, the
        same on every replica); in shadow mode the champion still answers and the challenger
        gets the copy.
        """
        running = candidates.challenger
        if running is None:
            return candidates.champion, None
        config = running.config
        sticky = config.sticky
        chosen = choose_version(
            candidates.champion.version,
            running.model.version,
            config.weight,
            sticky.value_of(headers, body) if sticky is not None else None,
            request_id,
        )
        if chosen != running.model.version:
            return candidates.champion, None
        if config.mode is CanaryMode.SHADOW:
            return candidates.champion, running.model
        return running.model, None

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
        headers: Mapping[str, str] | None = None,
    ) -> Encoded:
        """Answer one inference request; InferenceError says why not (with the request's id
        once it reached a served version). `headers`: the request's (a sticky key may name
        one), looked up case-insensitively."""
        self.authorize(authorization)
        candidates = self.candidates(name, version)
        model, shadow = candidates.champion, None
        request_id = new_request_id(presented_id)
        with contextlib.ExitStack() as holding:
            for held in candidates.models():
                holding.enter_context(held.hold())
            try:
                raw = await read_body()
                heavy = len(raw) > INLINE_BODY_BYTES
                body, named = await _run(heavy, codec.parse, raw)
                if named:
                    request_id = new_request_id(named)
                model, shadow = self.choose(
                    candidates, request_id, headers or {}, codec.body_object(body)
                )
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
            if shadow is not None:
                copy_hold = contextlib.ExitStack()
                copy_hold.enter_context(shadow.hold())  # before this request lets go of it
                self._copy_to(shadow, codec, body, request_id, heavy, copy_hold)
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

    def _copy_to(
        self,
        model: LoadedModel,
        codec: Codec,
        body: Any,
        request_id: str,
        heavy: bool,
        holding: contextlib.ExitStack,
    ) -> None:
        """Predict a shadow copy in the background, after the champion's answer is sent."""
        if len(self._shadow_copies) >= MAX_SHADOW_COPIES:
            holding.close()
            record_shadow_dropped(model.name)
            return
        task = asyncio.create_task(self._shadow(model, codec, body, request_id, heavy, holding))
        self._shadow_copies.add(task)
        task.add_done_callback(self._shadow_copies.discard)

    async def _shadow(
        self,
        model: LoadedModel,
        codec: Codec,
        body: Any,
        request_id: str,
        heavy: bool,
        holding: contextlib.ExitStack,
    ) -> None:
        """The challenger's answer to a copy: logged as a shadow answer (or failure), never
        returned, never counted as a served request."""
        with holding:
            try:
                decoded = await _run(heavy, codec.decode, body, model)
                started = time.perf_counter()
                prediction = await model.predict_batched(decoded.rows, decoded.probabilities)
            except InputError as exc:
                return self._shadow_failed(model, request_id, Failure.BAD_INPUT, exc)
            except InferenceError as exc:
                return self._shadow_failed(model, request_id, exc.failure, exc)
            except ModelProcessError as exc:
                return self._shadow_failed(model, request_id, Failure.UNAVAILABLE, exc)
            except Exception as exc:
                return self._shadow_failed(model, request_id, Failure.MODEL_ERROR, exc)
            model.requests += 1
            self._log.record(
                request_id,
                model.name,
                model.version,
                model.features.names,
                decoded.rows,
                prediction.predictions,
                prediction.probabilities,
                round((time.perf_counter() - started) * 1000, 3),
                shadow=True,
            )
        return None

    def _shadow_failed(
        self, model: LoadedModel, request_id: str, failure: Failure, exc: Exception
    ) -> None:
        log.info("shadow %s v%s failed on %s: %s", model.name, model.version, request_id, exc)
        if failure.reason is not None:
            self._log.record_error(
                request_id, model.name, model.version, failure.reason, failure.status, shadow=True
            )

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
