"""Reads of a user's tasks. A task is its requester's alone: anybody else is told it does
not exist, exactly as for an id that never did. A caller limited to some agents (an API
key's allowlist) sees only those agents' tasks, and is refused the requester's others."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from marketplace.models import Task
from marketplace.selectors.access import NO_SUCH_TASK, AgentAllowlist, Refusal

ACTIVE_STATUSES = (Task.Status.PENDING_FUNDING, Task.Status.QUEUED, Task.Status.RUNNING)
# What a list never loads: up to a MiB each per task, so a page of them could be 150 MiB.
# A task's own page and endpoint show them.
LIST_DEFERRED = ("input", "stdout", "stderr")


def tasks_of(
    user: Any,
    *,
    with_escrow: bool = False,
    status: str | None = None,
    agent_slug: str | None = None,
    allowlist: AgentAllowlist | None = None,
) -> QuerySet[Task]:
    """The user's tasks, newest first, optionally of one status or one agent, without their
    input and output. `with_escrow` joins each task's escrow (the API lists it). With an
    `allowlist`, only its agents' tasks, and naming another agent is refused."""
    tasks = Task.objects.filter(requester=user).defer(*LIST_DEFERRED)
    if allowlist is not None:
        if agent_slug is not None:
            allowlist.check(slug=agent_slug)
        tasks = tasks.filter(agent_id__in=allowlist.ids)
    tasks = (
        tasks.select_related("agent", "escrow") if with_escrow else tasks.select_related("agent")
    )
    # The version each ran, without its contract (up to 64 KiB a schema).
    tasks = tasks.select_related("binary").defer("binary__input_schema", "binary__output_schema")
    if status is not None:
        tasks = tasks.filter(status=status)
    if agent_slug is not None:
        tasks = tasks.filter(agent__slug=agent_slug)
    return tasks.order_by("-created_at")


def task_of(
    user: Any,
    task_id: Any,
    *,
    missing: Refusal = NO_SUCH_TASK,
    allowlist: AgentAllowlist | None = None,
) -> Task:
    """The user's own task; another user's is as absent as one that never existed. With an
    `allowlist`, the user's task of another agent is refused with its refusal."""
    task = (
        Task.objects.filter(requester=user, pk=task_id)
        .select_related("agent", "binary", "receipt", "escrow")
        .first()
    )
    if task is None:
        raise missing()
    if allowlist is not None:
        allowlist.check(agent_id=task.agent_id)
    return task


def has_active_tasks(tasks: Iterable[Task]) -> bool:
    return any(task.status in ACTIVE_STATUSES for task in tasks)
