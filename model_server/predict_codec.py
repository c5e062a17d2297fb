"""The model server's own `/predict/{name}` body as a data-plane codec.

Request: the row shapes of model_server/request_rows.py, plus `"probabilities": false` to leave
out a classifier's probabilities (the model process then skips computing them where labels do
not need them). Answer: predictions, the version that answered, its latency and request id, and
a classifier's probabilities with their classes unless switched off.
"""

from __future__ import annotations

import time
from typing import Any

from model_server.data_plane import Answer, Decoded, Encoded, ServedModel
from model_server.json_codec import dumps, loads
from model_server.request_rows import InputError, rows_from_body

PROBABILITIES = "probabilities"


class PredictCodec:
    def parse(self, raw: bytes) -> tuple[Any, str | None]:
        return loads(raw), None

    def body_object(self, body: Any) -> Any:
        return body

    def decode(self, body: Any, model: ServedModel) -> Decoded:
        wanted = True
        names = model.features.names or ()
        if isinstance(body, dict) and PROBABILITIES in body and PROBABILITIES not in names:
            body = dict(body)
            wanted = body.pop(PROBABILITIES)
            if not isinstance(wanted, bool):
                raise InputError(f"'{PROBABILITIES}' must be true or false")
        return Decoded(rows_from_body(body, model.features), wanted and model.has_proba)

    def encode(self, answer: Answer) -> Encoded:
        prediction = answer.prediction
        content: dict[str, Any] = {
            "predictions": prediction.predictions,
            "model_name": answer.model.name,
            "model_version": answer.model.version,
            "processing_time_ms": round((time.perf_counter() - answer.started) * 1000, 3),
            "request_id": answer.request_id,
        }
        if prediction.probabilities is not None:
            content[PROBABILITIES] = prediction.probabilities
            content["classes"] = prediction.classes
        return Encoded(dumps(content), "application/json")
