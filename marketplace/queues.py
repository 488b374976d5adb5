"""The two queues the workers take their work from (SPEC §18).

Every host runs two q2 clusters (`manage.py supervise` starts both): one takes task runs
from TASK_QUEUE, the other takes everything else from the service queue — webhook
deliveries, dispute replays, withdrawals and the scheduled jobs (recovery among them). A
backlog of task runs then never delays a webhook, a payout or the recovery that would clear
the backlog, and a task cluster that stalls doesn't stall them either.

q2 sends a message to the queue of the process that sends it unless told otherwise, and
both kinds of process send both kinds of message (a settlement records a webhook event; the
service cluster's recovery re-sends task runs), so every message here names its queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.humanhash import uuid
from django_q.models import OrmQ
from django_q.signals import pre_enqueue
from django_q.signing import SignedPackage
from django_q.tasks import async_task

RUN_TASK = "execution.tasks.run_task"


def task_queue() -> str:
    return settings.TASK_QUEUE


def service_queue() -> str:
    return settings.SERVICE_QUEUE


def queues() -> dict[str, str]:
    """The queues by role, as /healthz and /metrics name them."""
    return {"tasks": task_queue(), "service": service_queue()}


def broker_for(queue: str) -> Broker:
    return get_broker(queue)


def task_run_send(*, task_id: Any) -> None:
    """A message that makes a worker of the task queue run the next task (see
    `execution.services.task_execute_next`: which task it runs is the fair share's choice,
    not the message's)."""
    async_task(RUN_TASK, str(task_id), task_name=f"run {task_id}", cluster=task_queue())


def tasks_run_send(*, task_ids: Sequence[Any]) -> None:
    """`task_run_send` for each task, one INSERT for all of them on the ORM broker (a batch's
    hundred messages would otherwise be a hundred round trips); other brokers, and `sync`,
    send them one by one."""
    messages = task_run_messages(task_ids=task_ids)
    if messages is None:
        for task_id in task_ids:
            task_run_send(task_id=task_id)
        return
    OrmQ.objects.using(Conf.ORM).bulk_create(messages)


def task_run_messages(*, task_ids: Sequence[Any], alias: str | None = None) -> list[OrmQ] | None:
    """The ORM broker's rows (not saved) of the messages `task_run_send` would send for the
    tasks, as `async_task` makes and signs them, for a caller that writes them with its own
    rows (on the database `alias`); None for another broker, another database, or with
    `sync`, which send theirs themselves."""
    broker = broker_for(task_queue())
    if not isinstance(broker, ORM) or Conf.SYNC or alias not in (None, Conf.ORM):
        return None
    now = timezone.now()
    messages = []
    for task_id in task_ids:
        task: dict[str, Any] = {
            "id": uuid()[1],
            "name": f"run {task_id}",
            "func": RUN_TASK,
            "args": (str(task_id),),
            "cluster": task_queue(),
        }
        if Conf.CACHED:
            task["cached"] = Conf.CACHED
        if Conf.ACK_FAILURES:
            task["ack_failure"] = Conf.ACK_FAILURES
        task["kwargs"] = {}
        task["started"] = now
        pre_enqueue.send(sender="django_q", task=task)
        messages.append(OrmQ(key=broker.list_key, payload=SignedPackage.dumps(task), lock=now))
    return messages


def service_send(func: str, *args: Any, task_name: str) -> None:
    """A job for the service queue: a webhook delivery, a dispute replay, a withdrawal."""
    async_task(func, *args, task_name=task_name, cluster=service_queue())


def service_send_on_commit(func: str, *args: Any, task_name: str) -> None:
    """`service_send` once the caller's transaction commits (at once outside of one)."""
    transaction.on_commit(lambda: service_send(func, *args, task_name=task_name))
