"""The `mlops` command's exit statuses, so that scripts and CI can act on an outcome.

Some codes mean one thing per command: 1 is a followed pipeline that failed, drift that
`mlops drift` detected, labels `mlops feedback` could not store, a notebook `mlops check`
refused, or a local run (`mlops run`) that failed.
"""

from __future__ import annotations

from typing import Final

EXIT_SUCCESS: Final = 0
EXIT_FAILED: Final = 1
EXIT_CANCELLED: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_API_ERROR: Final = 4
# `mlops run`: the notebook ran, but its metrics fail the deploy gate (a pipeline would
# register the version and not serve it).
EXIT_GATE_FAILED: Final = 5
EXIT_USAGE: Final = 64
# Interrupted with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED: Final = 130

# `mlops drift`: some feature of the version drifted (0: none did, or too few rows to tell).
EXIT_DRIFT_DETECTED: Final = 1
# `mlops feedback`: some request id was unknown or some label rejected (the rest were stored).
EXIT_LABELS_NOT_STORED: Final = 1
