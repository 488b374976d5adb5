"""An outcome scored before a settlement's transaction, as the statement that records it
(`reputation.record_sql`) and the services that score it (`reputation.services`) both
see it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Scoring:
    """An outcome scored against the agent's standing as read before the settlement's
    transaction. `version` is that standing's event counts (successes, failures, neutral):
    every event adds one, so an unchanged version means an unchanged standing and record."""

    agent_id: int
    version: tuple[int, int, int]
    changes: dict[str, Any]
    event: dict[str, Any]

    @property
    def delta(self) -> Decimal:
        return self.event["delta"]
