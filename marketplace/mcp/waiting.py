"""How `run_agent` waits for its task to be final: the same wait as `Prefer: wait` on
`POST /api/v1/tasks/` (marketplace.task_wait), woken by the settlement, not by polling.

A process holds at most TASK_WAITERS_PER_PROCESS waiting requests, REST and MCP together;
past that, run_agent answers at once with the task as it stands (its id and status), as the
REST API answers 202 then, and the caller follows it with get_task.
"""

from __future__ import annotations

from typing import Any

from marketplace.models import Task
from marketplace.task_wait import WaitersFull, task_wait


def wait_for_final(task_id: Any, *, seconds: float) -> Task:
    """The task once final, or as it stands after `seconds` (none: at once)."""
    if seconds > 0:
        try:
            return task_wait(task_id, seconds)
        except WaitersFull:
            pass
    return Task.objects.select_related("agent", "binary", "receipt").get(pk=task_id)
