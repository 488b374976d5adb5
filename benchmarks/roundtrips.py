"""Round trips to the database per money path, counted with Django's
`CaptureQueriesContext`: every statement, savepoints included, and the BEGIN and COMMIT of
each transaction (Django logs them too; counted apart where it does not). Imported by
`e2e.py` after Django is set up."""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from benchmarks.common import BUDGET, INPUT, RUN_ID, claim_task, first_execution
from escrow.channels import channel_open, key_register, voucher_message
from escrow.models import Escrow
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_execute, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_submit, user_create

LIMIT = 10  # SPEC §16: an escrow settlement and a submission each take at most 10
SUBMISSION_LIMIT = 3  # SPEC §20: an escrow submission takes at most 3


@dataclass(frozen=True)
class Count:
    statements: int  # BEGIN and COMMIT included
    transactions: int


@contextmanager
def counted() -> Iterator[list[Count]]:
    """Count this thread's statements and commits inside the block."""
    commits: list[int] = []
    commit = connection.commit

    def counting_commit() -> None:
        commits.append(1)
        commit()

    result: list[Count] = []
    connection.commit = counting_commit  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as captured:
            yield result
    finally:
        del connection.commit
    sql = [query["sql"].strip().upper() for query in captured.captured_queries]
    logged = sum(statement in {"BEGIN", "COMMIT"} for statement in sql)
    extra = 0 if logged else 2 * len(commits)  # a Django that does not log BEGIN and COMMIT
    result.append(Count(statements=len(sql) + extra, transactions=len(commits)))


def count(action: Callable[[], object]) -> Count:
    with counted() as result:
        action()
    return result[0]


def round_trip_rows(owner: User, requester: User, agent: Agent) -> list[list[str]]:
    """One counted run of each path, after a warm-up run of the same path."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_register(user_id=requester.pk, public_key=base64.b64encode(public).decode())
    channel = channel_open(
        requester_user_id=requester.pk,
        agent_id=agent.pk,
        payee_user_id=owner.pk,
        deposit=10 * BUDGET,
    )
    nonce = [0]

    def submit(payment: str = Task.Payment.ESCROW) -> Task:
        extra: dict[str, object] = {}
        if payment == Task.Payment.CHANNEL:
            nonce[0] += 1
            message = voucher_message(channel.pk, nonce[0], nonce[0] * BUDGET)
            extra = {
                "payment": payment,
                "channel": str(channel.pk),
                "voucher": {
                    "nonce": nonce[0],
                    "cumulative_amount": nonce[0] * BUDGET,
                    "signature": base64.b64encode(key.sign(message)).decode(),
                },
            }
        return task_submit(requester=requester, agent=agent, input=INPUT, budget=BUDGET, **extra)  # type: ignore[arg-type]

    first = claim_task(submit().pk)
    _, execution = first_execution(first)
    task_settle(task_id=first[0], attempt=first[1], execution=execution)
    failed = Execution(reason=Task.FailureReason.TRAP, detail="benchmark", fuel_limit=1)

    def settlement(payment: str, result: Execution, *, held: bool = True) -> Count:
        """As the worker settles, with the task it claimed and the escrow it checked
        (`held`), or from the task's id alone, as recovery does."""
        counts = []
        for _ in range(2):  # the first warms caches and prepared statements up
            task_id = submit(payment).pk
            claimed = task_claim(task_id=task_id)
            assert claimed is not None
            rows: dict[str, Any] = {}
            if held and "escrow" in inspect.signature(task_settle).parameters:
                rows = {"task": claimed[0], "escrow": Escrow.objects.get(task_id=task_id)}
            with counted() as found:
                task_settle(task_id=task_id, attempt=claimed[1], execution=result, **rows)
            counts.append(found[0])
        return counts[-1]

    def twice(action: Callable[[], object]) -> Count:
        action()
        return count(action)

    depositor = user_create(username=f"bench-depositor-{RUN_ID}")

    def deposit() -> None:
        deposit_create(user_id=depositor.pk, amount=1)

    def worker() -> Count:
        found = []
        for _ in range(2):  # the first warms caches and prepared statements up
            task_id = submit().pk
            found.append(count(lambda: task_execute(task_id=task_id)))  # noqa: B023
        return found[-1]

    # Each path with its limit: True for LIMIT, a number for another, False for none.
    paths: list[tuple[str, Count, bool | int]] = [
        ("escrow settlement, success", settlement(Task.Payment.ESCROW, execution), True),
        (
            "escrow settlement, success, from the id alone",
            settlement(Task.Payment.ESCROW, execution, held=False),
            False,
        ),
        ("escrow settlement, failure (trap)", settlement(Task.Payment.ESCROW, failed), True),
        ("channel settlement, success", settlement(Task.Payment.CHANNEL, execution), False),
        ("submission, escrow (task_submit)", twice(submit), SUBMISSION_LIMIT),
        ("submission, channel (task_submit)", twice(lambda: submit("channel")), True),
        ("deposit (deposit_create)", twice(deposit), False),
        ("worker: task_execute, claim → settled", worker(), False),
    ]
    rows = []
    for label, found, limited in paths:
        limit = LIMIT if limited is True else limited
        verdict = ("ok" if found.statements <= limit else "OVER") if limited else ""
        rows.append([label, str(found.statements), str(found.transactions), verdict])
    escrow_trips = paths[0][1].statements
    channel_trips = paths[3][1].statements
    rows.append(
        [
            "channel / escrow settlement",
            f"{channel_trips / escrow_trips:.2f}",
            "",
            "ok" if channel_trips * 2 <= escrow_trips else "NOT ≤ 0.5",
        ]
    )
    return rows


HEADERS = ["path", "round trips", "transactions", f"≤ {LIMIT} (submission ≤ {SUBMISSION_LIMIT})"]
