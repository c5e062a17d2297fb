"""The `mlops` command's exit statuses, so that scripts and CI can act on an outcome.

Some codes mean one thing per command: 1 is a followed pipeline that failed, drift that
`mlops drift` detected, or labels `mlops feedback` could not store.
"""

from __future__ import annotations

from typing import Final

EXIT_SUCCESS: Final = 0
EXIT_FAILED: Final = 1
EXIT_CANCELLED: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_API_ERROR: Final = 4
EXIT_USAGE: Final = 64

# `mlops drift`: some feature of the version drifted (0: none did, or too few rows to tell).
EXIT_DRIFT_DETECTED: Final = 1
# `mlops feedback`: some request id was unknown or some label rejected (the rest were stored).
EXIT_LABELS_NOT_STORED: Final = 1
