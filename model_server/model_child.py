"""The model process: one model version, loaded and predicting inside the sandbox.

Unpickling a registered model runs code from the repository that pushed it, so the model
server never does it itself: model_server/model_process.py starts this module as
`python -I -m model_server.model_child` inside the sandbox (mlops_core/sandbox.py: a uid of its
own, no network, no platform secret, its model folder read-only) and talks to it over its
stdin and stdout (model_server/model_channel.py). The heavy imports happen at start, while the
server downloads the artifacts; then:

    server → {"op": "load", "path": "<model folder>"}      ← {"ok": true, "flavor": ..., ...}
    server → {"op": "predict", "rows": [[...], ...], "probabilities": true}
                                                           ← {"ok": true, "predictions": ...}

A failure is `{"ok": false, "error": "..."}`; end of input ends the process. The channel keeps
the original descriptors; fd 1 is pointed at stderr, so a model that prints cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from model_server.estimator import Estimator, load
from model_server.heap import settle_heap
from model_server.model_channel import ChannelClosed, encode, receive, write_frame

# What most registered models unpickle into, imported while the process waits as a spare
# (model_process.py's SpareProcesses) rather than while a deploy waits for the load:
# scikit-learn's base alone takes ~1 s to import, the common estimator families ~0.1 s more.
PRELOADED = (
    "sklearn.base",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
)


def preload() -> None:
    """Import PRELOADED (best effort: a server without scikit-learn serves other flavors)."""
    for module in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def main() -> int:
    preload()
    channel_in, channel_out = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    estimator: Estimator | None = None
    while True:
        try:
            message = receive(channel_in)
        except ChannelClosed:
            return 0
        try:
            if message.get("op") == "load":
                estimator = load(Path(message["path"]))
                settle_heap()  # predictions allocate; full passes skip the libraries' heap
                reply: dict[str, Any] = {
                    "ok": True,
                    "flavor": estimator.flavor,
                    "features": estimator.features.to_json(),
                    "classes": estimator.classes,
                    "has_proba": estimator.has_proba,
                }
            elif message.get("op") == "predict" and estimator is not None:
                predictions, probabilities = estimator.outputs(
                    message["rows"], bool(message.get("probabilities", True))
                )
                reply = {"ok": True, "predictions": predictions, "probabilities": probabilities}
            else:
                reply = {"ok": False, "error": f"unexpected request {message.get('op')!r}"}
            frame = encode(reply)  # outputs JSON cannot carry fail here, as a failed prediction
        except Exception as exc:
            frame = encode({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        write_frame(channel_out, frame)


if __name__ == "__main__":
    sys.exit(main())
