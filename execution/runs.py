"""What a run produced (`Execution`) and what it costs: the one cost formula, which caps a
run's fuel before it starts and prices it when it settles."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from marketplace.models import Task


@dataclass(frozen=True)
class Execution:
    """What a run produced; `reason` is empty on success."""

    reason: str = ""
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    fuel_used: int = 0
    fuel_limit: int = 0
    elapsed_ms: int = 0
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.reason


def cost_for(*, base_fee: int, fuel_price: int, fuel_used: int, budget: int) -> int:
    """base fee + fuel at µCR per million units (rounded up), never above the budget."""
    # Integer ceiling division: a float here is off by a µCR once the product passes 2**53.
    return min(budget, base_fee + -(-fuel_used * fuel_price // 1_000_000))


def fee_for(cost: int) -> int:
    return cost * settings.PLATFORM_FEE_BPS // 10_000


def affordable_fuel(task: Task) -> int:
    """The fuel a run gets: the task's limit, capped so that its cost fits the budget — and,
    for an evaluated task, leaves its evaluator's least (SPEC §21)."""
    if task.fuel_price <= 0:
        return task.fuel_limit
    spare = task.budget - task.base_fee - evaluator_reserve(task)
    return max(0, min(task.fuel_limit, spare * 1_000_000 // task.fuel_price))


def evaluator_reserve(task: Task) -> int:
    """What an evaluated task's budget keeps for its evaluator: its base fee and some fuel,
    at the price pinned at submission (marketplace.evaluators.evaluator_least)."""
    if task.evaluator_base_fee is None:
        return 0
    return task.evaluator_base_fee + (1 if (task.evaluator_fuel_price or 0) > 0 else 0)
