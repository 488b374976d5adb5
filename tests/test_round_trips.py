"""Round trips to the database per money path (SPEC §16), on real PostgreSQL.

A round trip is one statement the connection sends; Django logs the transaction's BEGIN
and COMMIT among them. `round_trips()` is the helper benchmarks can call to count any path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from escrow.earning_models import Earning
from escrow.errors import EscrowStateError
from escrow.models import Escrow, Transfer
from escrow.services import deposit_create
from execution.models import Receipt
from execution.services import Execution, task_claim, task_settle
from marketplace.apikeys.lifecycle import api_key_create
from marketplace.models import Task
from marketplace.services import task_submit
from marketplace.webhooks.keyring import secret_encrypt
from marketplace.webhooks.models import WebhookDelivery, WebhookEndpoint
from reputation.models import ReputationEvent
from tests.factories import channel_opened, paid_by

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ESCROW_BUDGET = 10
# SPEC §20: at most 3. The agent's read, then one statement: the task, its key's charge, its
# escrow, the hold and (on the ORM broker the tests use) its message; on Redis the message
# is sent after the commit.
SUBMISSION_BUDGET = 3


def round_trips(run: Callable[[], Any]) -> tuple[int, list[str]]:
    """How many round trips `run()` takes (its statements, each BEGIN and each COMMIT),
    and the statements themselves, for a path that is one outermost transaction."""
    with CaptureQueriesContext(connection) as captured:
        run()
    statements = [query["sql"] for query in captured.captured_queries]
    return len(statements), statements


def _show(name: str, count: int, statements: list[str]) -> None:
    print(f"\n{name}: {count} round trips")
    for sql in statements:
        print("   ", sql[:160])


def _submit(requester, agent, **options: Any) -> Task:
    return task_submit(requester=requester, agent=agent, input="hi", budget=100_000, **options)


def _settle(task: Task, execution: Execution, *, held: bool = True) -> tuple[int, list[str]]:
    """Settle as the worker does: with the task it claimed and the escrow it checked
    (`held`), or as recovery does, from the task's id alone."""
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    claimed, attempt = claim
    rows: dict[str, Any] = (
        {"task": claimed, "escrow": Escrow.objects.get(task_id=task.pk)} if held else {}
    )
    settled: list[bool] = []
    count, statements = round_trips(
        lambda: settled.append(
            task_settle(task_id=task.pk, attempt=attempt, execution=execution, **rows)
        )
    )
    assert settled == [True]
    return count, statements


SUCCESS = Execution(exit_code=0, stdout=b'{"ok": true}', fuel_used=1_000, fuel_limit=10_000)
FAILURE = Execution(reason=Task.FailureReason.TRAP, exit_code=None, fuel_limit=10_000)


def settlement_round_trips(requester, agent, execution: Execution) -> tuple[int, list[str]]:
    _submit(requester, agent)  # warm the per-process caches (system account ids)
    task = _submit(requester, agent)
    return _settle(task, execution)


def test_an_escrow_settlement_takes_at_most_ten_round_trips(requester, agent):
    count, statements = settlement_round_trips(requester, agent, SUCCESS)
    _show("escrow settlement (success)", count, statements)
    # One statement in autocommit: the result with its receipt, event, escrow, earning,
    # posting, then the reputation scored in SQL and the fuel sample; nothing read before.
    assert count == 1


def test_a_settlement_from_the_task_id_alone_reads_the_task_and_escrow_first(requester, agent):
    _submit(requester, agent)
    count, statements = _settle(_submit(requester, agent), SUCCESS, held=False)
    _show("escrow settlement (success, from the id: recovery, operators)", count, statements)
    assert count == 3
    assert "marketplace_task" in statements[0] and "escrow_escrow" in statements[1]


def test_a_failure_settled_from_the_task_id_never_reads_the_input(requester, agent):
    _submit(requester, agent)
    count, statements = _settle(_submit(requester, agent), FAILURE, held=False)
    assert '"marketplace_task"."input",' not in statements[0]
    assert '"marketplace_task"."stdout"' not in statements[0]
    assert count <= ESCROW_BUDGET


def test_a_failed_escrow_settlement_takes_at_most_ten_round_trips(requester, agent):
    count, statements = settlement_round_trips(requester, agent, FAILURE)
    _show("escrow settlement (failure)", count, statements)
    assert count == 1


def test_a_submission_takes_at_most_three_round_trips(requester, agent):
    _submit(requester, agent, idempotency_key="warm")
    count, statements = round_trips(lambda: _submit(requester, agent, idempotency_key="k1"))
    _show("submission (escrow, Idempotency-Key)", count, statements)
    assert count <= SUBMISSION_BUDGET


def test_a_submission_with_an_api_key_takes_at_most_three_round_trips(requester, agent):
    key, _ = api_key_create(
        user=requester, name="bot", scopes=["tasks:write"], limits={"daily": 10_000_000}
    )
    _submit(requester, agent, idempotency_key="warm", api_key=key)
    count, statements = round_trips(
        lambda: _submit(requester, agent, idempotency_key="k1", api_key=key)
    )
    _show("submission (escrow, Idempotency-Key, API key)", count, statements)
    assert count <= SUBMISSION_BUDGET
    key.refresh_from_db()
    assert key.spent_daily == 200_000  # counted in the statement, to the micro-credit


def channel_settlement_round_trips(requester, agent, bob) -> tuple[int, list[str]]:
    channel = channel_opened(requester, agent, bob)
    tasks = [
        _submit(
            requester,
            agent,
            **paid_by(channel, nonce, 100_000 * nonce),
        )
        for nonce in (1, 2)
    ]
    _settle(tasks[0], SUCCESS)
    return _settle(tasks[1], SUCCESS)


def test_a_submission_paid_by_a_channel_takes_at_most_ten_round_trips(requester, agent, bob):
    channel = channel_opened(requester, agent, bob)

    def submit(nonce: int) -> Task:
        return _submit(
            requester,
            agent,
            **paid_by(channel, nonce, 100_000 * nonce),
        )

    submit(1)
    count, statements = round_trips(lambda: submit(2))
    _show("submission (channel voucher)", count, statements)
    assert count <= ESCROW_BUDGET
    channel.refresh_from_db()
    assert (channel.nonce, channel.reserved, channel.in_flight) == (2, 200_000, 2)
    assert channel.authorized == 200_000


def test_a_channel_settlement_takes_no_more_round_trips_than_an_escrow_one(requester, agent, bob):
    escrow_count, _ = settlement_round_trips(requester, agent, SUCCESS)
    count, statements = channel_settlement_round_trips(requester, agent, bob)
    _show("channel settlement (success)", count, statements)
    assert count == 1  # the channel and escrow rows are written with the result
    assert count <= escrow_count


def test_a_channel_settlement_and_an_escrow_one_are_each_one_round_trip(requester, agent, bob):
    """SPEC §16 asked a channel settlement for half an escrow one's round trips; both now
    take one (SPEC §20), the fewest there can be: a channel task's statement writes fewer
    rows (its channel and escrow rows, not an escrow, earning and posting), not fewer
    round trips."""
    escrow_count, _ = settlement_round_trips(requester, agent, FAILURE)
    channel_count, _ = channel_settlement_round_trips(requester, agent, bob)
    assert escrow_count == channel_count == 1


def test_a_settlement_reads_nothing_before_its_statement(requester, agent):
    """No read of the agent's standing: another settlement of the agent committed since the
    last one changes nothing (SPEC §20)."""
    _submit(requester, agent)
    tasks = [_submit(requester, agent) for _ in range(3)]
    claims = [task_claim(task_id=task.pk) for task in tasks]
    for task, claim in zip(tasks, claims, strict=True):
        assert claim is not None
        claimed, attempt = claim
        escrow = Escrow.objects.get(task_id=task.pk)
        settle = partial(
            task_settle, task_id=task.pk, attempt=attempt, execution=SUCCESS, task=claimed
        )
        count, statements = round_trips(partial(settle, escrow=escrow))
        assert count == 1 and statements[0].startswith("WITH settled AS (UPDATE")
    assert ReputationEvent.objects.filter(task__in=tasks).count() == 3


def test_a_settlement_of_an_api_key_task_takes_at_most_ten_round_trips(requester, agent):
    key, _ = api_key_create(
        user=requester, name="bot", scopes=["tasks:write"], limits={"daily": 10_000_000}
    )
    _submit(requester, agent, api_key=key)
    count, statements = _settle(_submit(requester, agent, api_key=key), SUCCESS)
    _show("escrow settlement (success, API key)", count, statements)
    assert count <= ESCROW_BUDGET
    assert sum("marketplace_apikey" in sql for sql in statements) == 1  # one statement
    key.refresh_from_db()
    assert key.spent_daily == 100_000 + 1_002  # the first task's budget, the second's cost


def test_a_deposit_takes_at_most_eight_round_trips(alice):
    deposit_create(user_id=alice.pk, amount=1_000)
    count, statements = round_trips(lambda: deposit_create(user_id=alice.pk, amount=1_000))
    _show("deposit", count, statements)
    assert count <= 8


def test_the_settlement_that_loses_the_task_writes_no_webhook_event(requester, agent):
    WebhookEndpoint.objects.create(
        owner=requester,
        url="https://example.com/hook",
        events="task.succeeded",
        secret_encrypted=secret_encrypt("s"),
    )
    task = _submit(requester, agent)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    _, attempt = claim
    assert task_settle(task_id=task.pk, attempt=attempt, execution=SUCCESS) is True
    assert task_settle(task_id=task.pk, attempt=attempt, execution=SUCCESS) is False
    assert list(WebhookDelivery.objects.values_list("type", "object_id")) == [
        ("task.succeeded", str(task.pk))
    ]


def test_an_api_submission_reads_its_agent_once_and_never_reads_its_task_back(requester, agent):
    client = APIClient()
    client.force_authenticate(requester)
    body = {"agent": agent.slug, "input": "hi", "budget": 100_000}
    assert client.post("/api/v1/tasks/", body, format="json").status_code == 201
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 201
    statements = [query["sql"] for query in captured.captured_queries]
    _show("API submission (escrow)", len(statements), statements)
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    assert sum('FROM "marketplace_agent"' in sql for sql in reads) == 1
    assert not any('FROM "marketplace_task"' in sql for sql in reads)
    task = Task.objects.select_related("escrow").get(pk=response.json()["id"])
    assert response.json()["escrow"] == {"id": task.escrow.pk, "status": "funded"}
    assert (response.json()["status"], response.json()["agent"]) == ("queued", "echo")


def test_a_claim_is_one_statement_returning_the_task_its_agent_and_binary(requester, agent):
    task = _submit(requester, agent)
    claims: list[Any] = []
    count, statements = round_trips(lambda: claims.append(task_claim(task_id=task.pk)))
    _show("claim", count, statements)
    assert count == 1 and statements[0].startswith("UPDATE")
    [(claimed, attempt)] = claims
    assert (claimed.status, claimed.attempts, attempt) == ("running", 1, 1)
    assert (claimed.agent.slug, claimed.binary.pk) == ("echo", agent.current_binary_id)
    assert claimed.input == "hi" and claimed.min_reputation == task.min_reputation
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.attempts, stored.started_at) == ("running", 1, claimed.started_at)
    assert stored.lease_expires_at == claimed.lease_expires_at
    lease = timedelta(milliseconds=task.timeout_ms, seconds=settings.LEASE_MARGIN_SECONDS)
    assert claimed.lease_expires_at - claimed.started_at == lease
    assert round_trips(lambda: claims.append(task_claim(task_id=task.pk)))[0] == 1
    assert claims[-1] is None  # claimed once


def test_a_channel_settlement_refused_in_its_statement_writes_nothing(requester, agent, bob):
    channel = channel_opened(requester, agent, bob)
    task = _submit(
        requester,
        agent,
        **paid_by(channel, 1, 100_000),
    )
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    Escrow.objects.filter(task_id=task.pk).update(status=Escrow.Status.CANCELLED)
    with pytest.raises(EscrowStateError):
        task_settle(task_id=task.pk, attempt=claim[1], execution=SUCCESS)
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.cost) == ("running", None)
    channel.refresh_from_db()
    assert (channel.redeemed, channel.reserved, channel.in_flight) == (0, 100_000, 1)
    assert not WebhookDelivery.objects.exists()
    # The row put back as it was, for the ledger audit after the test.
    Escrow.objects.filter(task_id=task.pk).update(status=Escrow.Status.PENDING)


def test_an_escrow_settlement_refused_in_its_statement_writes_nothing(requester, agent):
    """The escrow left `funded` under the running task (an operator refunded it): the one
    statement refuses itself, the settlement redone in a transaction says why, and neither
    leaves a result, a receipt, an event, an earning or a transfer behind."""
    task = _submit(requester, agent)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    claimed, attempt = claim
    escrow = Escrow.objects.get(task_id=task.pk)
    Escrow.objects.filter(pk=escrow.pk).update(status=Escrow.Status.REFUNDED)
    with CaptureQueriesContext(connection) as captured, pytest.raises(EscrowStateError):
        task_settle(
            task_id=task.pk, attempt=attempt, execution=SUCCESS, task=claimed, escrow=escrow
        )
    statements = [query["sql"] for query in captured.captured_queries]
    assert any("settlement_refused()" in sql for sql in statements)  # tried at once first
    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.cost) == ("running", None)
    assert not Receipt.objects.filter(task_id=task.pk).exists()
    assert not ReputationEvent.objects.filter(task_id=task.pk).exists()
    assert not Earning.objects.filter(task_id=task.pk).exists()
    assert not Transfer.objects.filter(task_id=task.pk).exclude(kind="escrow_hold").exists()
    assert not WebhookDelivery.objects.exists()
    # The row put back as it was, for the ledger audit after the test.
    Escrow.objects.filter(pk=escrow.pk).update(status=Escrow.Status.FUNDED)
