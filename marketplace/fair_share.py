"""The workers' fair share between requesters, and each requester's tasks in flight (SPEC §23).

**Fair share: start-time fair queueing.** A worker does not run the task its message names
but the queued task with the lowest `fair_tag` (oldest first among equals). A task's tag is
set at submission: one past the requester's own last queued tag, but never below the lowest
tag still queued. A requester who queues 10,000 tasks gets tags 0…9,999; one who then submits
a single task gets the lowest tag in the queue, so it runs within a task or two whatever the
backlog, and a third requester's tasks interleave with both. A task put back in the queue (its
worker was lost) keeps its tag and goes first. Tags only order what is queued at once: when
the queue empties they start again from 0.

Messages stay one per task (so that the broker's count of work stays right), but they are
interchangeable: each one runs whichever task is fairest when it arrives.

**In flight.** A requester has at most MAX_TASKS_IN_FLIGHT tasks pending funding, queued or
running: past that a submission is refused (429 `too_many_tasks`) and nothing of it is kept.
On PostgreSQL the task's INSERT computes its tag with `marketplace_task_admit` (migration
marketplace 0014), which first takes an advisory lock on the requester for the rest of the
transaction and counts the tasks in flight under it: concurrent submissions of one
requester are admitted one after another and never overshoot, at no extra round trip.
SQLite admits one writer at a time: there the count is a query of its own. The one statement
of a submission on PostgreSQL (marketplace.submissions) admits all its tasks at once with
`marketplace_tasks_admit` (migration marketplace 0021): one count for a batch of a hundred,
under the same lock, and the tags one after another.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import BigIntegerField, Func, Max, Min, Subquery, Value
from django.db.models.expressions import CombinedExpression, Expression
from django.db.models.functions import Coalesce, Greatest

from marketplace.errors import TooManyTasks
from marketplace.models import Task

# The SQLSTATE `marketplace_task_admit` raises past the limit.
TOO_MANY = "EX429"


def fair_tag_next(*, requester_id: int) -> Expression:
    """The tag of a task the requester queues now, as an expression the task's INSERT
    computes: max(lowest queued tag, the requester's highest queued tag + 1). On
    PostgreSQL the function that computes it also admits the task (see above)."""
    if connection.vendor == "postgresql":
        return Func(
            Value(requester_id),
            Value(settings.MAX_TASKS_IN_FLIGHT),
            function="marketplace_task_admit",
            output_field=BigIntegerField(),
        )
    queued = Task.objects.filter(status=Task.Status.QUEUED).order_by().values("status")
    floor = Subquery(queued.annotate(tag=Min("fair_tag")).values("tag")[:1])
    own = queued.filter(requester_id=requester_id)
    last = Subquery(own.annotate(tag=Max("fair_tag")).values("tag")[:1])
    after_last = CombinedExpression(last, "+", Value(1))
    return Greatest(Coalesce(floor, Value(0)), Coalesce(after_last, Value(0)))


def tasks_admit_sql(*, requester_id: int, tasks: int) -> tuple[str, list[Any]]:
    """On PostgreSQL, the CTE `task_admitted` that admits `tasks` new tasks of the requester
    at once (`marketplace_tasks_admit`, migration marketplace 0021: one count for a batch),
    and its parameters. Its `base` is the first task's tag; `fair_tags_sql` the tags."""
    return (
        "task_admitted AS MATERIALIZED (SELECT marketplace_tasks_admit(%s, %s, %s) AS base)",
        [requester_id, settings.MAX_TASKS_IN_FLIGHT, tasks],
    )


def fair_tags_sql(*, tasks: int) -> tuple[str, list[Any]]:
    """The tag of each row of an INSERT of `tasks` tasks admitted by `task_admitted`: the
    tags one after another, as admitting them one by one gives."""
    if tasks == 1:
        return "(SELECT base FROM task_admitted)", []
    return "(SELECT base FROM task_admitted) + row_number() OVER () - 1", []


def too_many(error: DatabaseError) -> TooManyTasks | None:
    """The refusal `marketplace_task_admit` raised, as the domain error; None for others."""
    if getattr(error.__cause__, "sqlstate", None) != TOO_MANY:
        return None
    return _refusal()


def in_flight_check(*, requester_id: int) -> None:
    """Where the INSERT did not admit the task (SQLite): refuse the submission being made if
    it takes the requester past MAX_TASKS_IN_FLIGHT. Runs in the submission's transaction,
    after its task row is written, so the count includes it."""
    if connection.vendor == "postgresql":
        return
    count = Task.objects.filter(
        requester_id=requester_id, status__in=Task.IN_FLIGHT_STATUSES
    ).count()
    if count > settings.MAX_TASKS_IN_FLIGHT:
        raise _refusal()


def _refusal(*args: Any) -> TooManyTasks:
    limit = settings.MAX_TASKS_IN_FLIGHT
    return TooManyTasks(
        f"You have {limit} tasks pending, queued or running, the most allowed at once. "
        "Submit more once some have finished.",
        fields={"in_flight": [f"at most {limit}"]},
    )
