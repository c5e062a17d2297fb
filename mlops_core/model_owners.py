"""Model ownership: a registered model name belongs to one repository and notebook.

Without it, any registered repository whose notebook declares `MODEL_NAME = "fraud"` would
publish versions of the `fraud` model that clients call, and could get them served. The first
pipeline to pass validate with a name claims it (`claim_model`); a pipeline from another
repository or notebook then fails validate naming the owner (`ownership_conflict`), until an
admin transfers the name (`transfer_model`). Models registered before ownership existed have no
owner row: the first pipeline that uses the name claims it.

Each function here owns its transactions: a claim races with claims of other workers, and the
loser of the primary-key conflict must start a fresh transaction to read the winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlops_core.database import session_scope
from mlops_core.schema import ModelOwner, utcnow

_TRANSFER_ATTEMPTS = 3


@dataclass(frozen=True)
class ModelSource:
    """Where a model's versions come from: a repository URL and a notebook path in it.

    `repo_id` links the repo row while it exists; it is not part of the identity, so a
    repository deleted and registered again (same URL) is still the owner.
    """

    repo_url: str
    notebook_path: str
    repo_id: int | None = None

    def same_as(self, other: ModelSource) -> bool:
        """Whether both name the same repository and notebook."""
        return (self.repo_url, self.notebook_path) == (other.repo_url, other.notebook_path)

    def describe(self) -> str:
        return f"{self.repo_url} (notebook {self.notebook_path})"


@dataclass(frozen=True)
class Ownership:
    """A model name's owner, and since when it owns it (its claim, or the last transfer)."""

    model_name: str
    owner: ModelSource
    owned_since: datetime


class ModelOwnershipError(RuntimeError):
    """The owner row could be neither written nor read (e.g. its repo was deleted meanwhile)."""


def ownership_conflict(name: str, owner: ModelSource, claimant: ModelSource) -> str | None:
    """Why `claimant` may not publish versions of model `name`, or None when it may."""
    if owner.same_as(claimant):
        return None
    return (
        f"model {name!r} belongs to {owner.describe()}; this pipeline runs "
        f"{claimant.describe()}. Choose another MODEL_NAME, or have an admin transfer the "
        f'name: POST /models/{name}/owner {{"repo_id": <id of this repository>}}'
    )


def get_ownership(session: Session, name: str) -> Ownership | None:
    """The owner of a model name, or None when nobody has claimed it yet."""
    row = session.get(ModelOwner, name)
    return _ownership(row) if row is not None else None


def claim_model(database_url: str, name: str, claimant: ModelSource) -> tuple[Ownership, bool]:
    """The owner of `name` after `claimant` asked for it, and whether this call claimed it.

    A name nobody owns goes to the claimant (inserted under the primary key, so of two
    concurrent claims exactly one wins; the other reads the winner). A claim by the owner
    itself re-links the owner's repo row when the repo was deleted and registered again.
    """
    with session_scope(database_url) as session:
        row = session.get(ModelOwner, name)
        if row is not None:
            if row.repo_id is None and _source(row).same_as(claimant):
                row.repo_id = claimant.repo_id
            return _ownership(row), False
    try:
        with session_scope(database_url) as session:
            row = _new_row(name, claimant)
            session.add(row)
            session.flush()
            claimed = _ownership(row)
        return claimed, True
    except IntegrityError as exc:
        with session_scope(database_url) as session:
            row = session.get(ModelOwner, name)
            if row is None:  # not a lost race: the claimant's repo row is gone
                raise ModelOwnershipError(f"could not claim model {name!r}: {exc.orig}") from exc
            return _ownership(row), False


def transfer_model(database_url: str, name: str, new_owner: ModelSource) -> Ownership:
    """Give `name` to `new_owner` (an admin's decision), whether anyone owned it or not."""
    for _ in range(_TRANSFER_ATTEMPTS):
        with session_scope(database_url) as session:
            row = session.get(ModelOwner, name)
            if row is not None:
                row.repo_id = new_owner.repo_id
                row.repo_url = new_owner.repo_url
                row.notebook_path = new_owner.notebook_path
                row.owned_since = utcnow()
                session.flush()
                return _ownership(row)
        owned, claimed = claim_model(database_url, name, new_owner)
        if claimed or owned.owner.same_as(new_owner):
            return owned
        # A pipeline claimed the name between the read and the insert: overwrite its claim.
    raise ModelOwnershipError(f"could not transfer model {name!r}: claimed again meanwhile")


def _new_row(name: str, source: ModelSource) -> ModelOwner:
    now = utcnow()
    return ModelOwner(
        model_name=name,
        repo_id=source.repo_id,
        repo_url=source.repo_url,
        notebook_path=source.notebook_path,
        created_at=now,
        owned_since=now,
    )


def _source(row: ModelOwner) -> ModelSource:
    return ModelSource(row.repo_url, row.notebook_path, row.repo_id)


def _ownership(row: ModelOwner) -> Ownership:
    return Ownership(row.model_name, _source(row), row.owned_since)
