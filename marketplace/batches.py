"""Batches of tasks (SPEC §20): up to MAX_BATCH escrow submissions in one request, all or
nothing.

Every task is checked as a submission of its own is (`task_prepare`) before anything is
written; then all are written at once (`marketplace.submissions.tasks_open`): on PostgreSQL
in one statement, elsewhere in one transaction. The requester's limit of tasks in flight
admits each task in turn; an API key's per-task limit caps each budget and its daily,
monthly and lifetime limits count their sum, exactly. A refusal that concerns one task says
which (`fields.index`, from 0); nothing of the batch is kept.

With an Idempotency-Key, the tasks carry it with their index (`<key> <index>`: a client's
key has no space), so a repeat after a request that died finds the batch it wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import User
from django.db import DatabaseError

from escrow.errors import DomainError, IdempotencyConflict
from marketplace.errors import PaymentUnavailable
from marketplace.models import ApiKey, Task
from marketplace.services import task_prepare
from marketplace.submissions import MAX_BATCH, Prepared, key_taken, same_submission, tasks_open


@contextmanager
def task_at(index: int) -> Iterator[None]:
    """A refusal of the batch's task `index`, saying so (message and `fields.index`)."""
    try:
        yield
    except DomainError as exc:
        _name(exc, index)
        raise


def _name(exc: DomainError, index: int) -> None:
    exc.message = f"Task {index}: {exc.message}"
    exc.args = (exc.message,)
    exc.fields = {"index": index, **exc.fields}


def tasks_submit(
    *,
    requester: User,
    submissions: Sequence[dict[str, Any]],
    idempotency_key: str | None = None,
    api_key: ApiKey | None = None,
) -> list[Task]:
    """Submit every task of `submissions` (each `task_submit`'s options, escrow payment
    only), in their order, or none of them."""
    if not 1 <= len(submissions) <= MAX_BATCH:
        raise ValueError(f"a batch has 1 to {MAX_BATCH} tasks, not {len(submissions)}")
    prepared: list[Prepared] = []
    for index, options in enumerate(submissions):
        with task_at(index):
            if options.get("payment", Task.Payment.ESCROW) != Task.Payment.ESCROW:
                raise PaymentUnavailable(
                    "A batch pays from your wallet (escrow): submit channel payments one by one."
                )
            key = None if idempotency_key is None else f"{idempotency_key} {index}"
            prepared.append(
                task_prepare(requester=requester, idempotency_key=key, api_key=api_key, **options)
            )
    try:
        return tasks_open(prepared)
    except DomainError as exc:
        at = getattr(exc, "index", None)
        if at is not None and len(prepared) > 1:
            _name(exc, at)
        raise
    except DatabaseError as exc:
        if idempotency_key is None or not key_taken(exc):
            raise
    return _written_before(requester, prepared)


def _written_before(requester: User, prepared: Sequence[Prepared]) -> list[Task]:
    """The batch a request with the same Idempotency-Key wrote, if it is this batch."""
    keys = [p.task.idempotency_key for p in prepared]
    found = {
        task.idempotency_key: task
        for task in Task.objects.select_related("agent", "binary", "escrow").filter(
            requester=requester, idempotency_key__in=keys
        )
    }
    if len(found) != len(keys):
        raise IdempotencyConflict()
    return [same_submission(found[p.task.idempotency_key], p.task) for p in prepared]
