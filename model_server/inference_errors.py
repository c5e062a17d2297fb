"""The one error of the inference path, and the one HTTP status each kind of failure gets.

Every protocol the model server speaks (`/predict`, the Open Inference Protocol, MLflow's
`/invocations`) runs through the data plane (model_server/data_plane.py), which raises only
InferenceError; a route only puts the message into its protocol's error shape. So the same
problem gets the same status whichever protocol carried it: a row that does not fit the model
is 422 on every route, a model process that died is 503 on every route.
"""

from __future__ import annotations

from enum import Enum

from mlops_core.prediction_log import ErrorReason


class Failure(Enum):
    """What went wrong: its HTTP status, and the reason it is counted under for a served version
    (None: no served version is involved, so nothing is counted against one)."""

    UNAUTHORIZED = (401, None)  # no or a wrong PREDICT_TOKEN
    NOT_SERVED = (404, None)  # no such model here (or no single one, for /invocations)
    NOT_LOADED = (503, None)  # still loading, or its version failed to load: may come later
    MALFORMED = (400, ErrorReason.BAD_INPUT)  # the body cannot be read: empty, not JSON, too deep
    TOO_LARGE = (413, ErrorReason.BAD_INPUT)  # the body is over PREDICT_MAX_BODY_BYTES
    UNSUPPORTED_MEDIA = (415, ErrorReason.BAD_INPUT)  # a content type the protocol cannot read
    BAD_INPUT = (422, ErrorReason.BAD_INPUT)  # read, but its rows or options do not fit the model
    MODEL_ERROR = (422, ErrorReason.MODEL_ERROR)  # the model refused these rows
    UNAVAILABLE = (503, ErrorReason.UNAVAILABLE)  # the model process died or hung

    def __init__(self, status: int, reason: ErrorReason | None) -> None:
        self.status = status
        self.reason = reason


class InferenceError(Exception):
    """A request the data plane could not answer; the message names the problem."""

    def __init__(
        self,
        failure: Failure,
        message: str,
        *,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.request_id = request_id  # set once the request reached a served version
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.failure.status
