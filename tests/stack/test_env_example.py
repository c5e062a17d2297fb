"""`.env.example` is the operator's reference: it must name every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from mlops_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SEED_NAMES = [
    "GITHUB_WEBHOOK_SECRET",
    "GITHUB_TOKEN",
    "REDIS_URL",
    "MLFLOW_TRACKING_URI",
    "MODEL_SERVER_URL",
    "DATABASE_URL",
    "AUTO_DEPLOY_ON_SUCCESS",
    "MIN_ACCURACY_THRESHOLD",
]


def documented() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def test_every_setting_is_documented() -> None:
    missing = {name.upper() for name in Settings.model_fields} - set(documented())
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_nothing_documented_that_no_setting_reads() -> None:
    unknown = set(documented()) - {name.upper() for name in Settings.model_fields}
    assert not unknown, f".env.example documents unknown settings {sorted(unknown)}"


def test_seed_names_come_first() -> None:
    assert documented()[: len(SEED_NAMES)] == SEED_NAMES


def test_copying_it_changes_no_default() -> None:
    """Every line is commented out: `cp .env.example .env` must not, say, empty a secret."""
    active = [
        line
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert active == []
