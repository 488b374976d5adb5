"""The audit commands find planted corruption and exit non-zero."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from escrow.services import deposit_create, escrow_create, escrow_fund
from reputation.policies import Outcome
from reputation.services import reputation_apply
from tests.factories import TaskFactory


def run(command: str) -> str:
    out = StringIO()
    call_command(command, stdout=out, stderr=out)
    return out.getvalue()


def tamper(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def some_money(alice, bob):
    deposit_create(user_id=alice.pk, amount=5_000)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=2_000)
    escrow_fund(escrow_id=escrow.pk)
    return escrow


def test_audit_ledger_passes_on_a_clean_ledger(some_money):
    output = run("audit_ledger")
    assert "ledger audit passed" in output
    assert "sum_of_balances=0 held_in_escrow=2000" in output


@pytest.mark.corrupts_ledger
def test_audit_ledger_catches_a_tampered_balance(some_money, alice):
    tamper("UPDATE escrow_account SET balance = balance + 1 WHERE user_id = %s", [alice.pk])
    with pytest.raises(CommandError, match="ledger audit failed"):
        run("audit_ledger")


@pytest.mark.corrupts_ledger
def test_audit_ledger_catches_a_balanced_but_wrong_pair_of_balances(some_money, alice, bob):
    # Sum still zero: only the per-account replay can see it.
    tamper("UPDATE escrow_account SET balance = balance - 7 WHERE user_id = %s", [alice.pk])
    tamper("UPDATE escrow_account SET balance = balance + 7 WHERE user_id = %s", [bob.pk])
    with pytest.raises(CommandError):
        run("audit_ledger")


@pytest.mark.corrupts_ledger
def test_audit_ledger_catches_an_escrow_state_that_disagrees_with_its_money(some_money):
    tamper("UPDATE escrow_escrow SET status = 'pending' WHERE id = %s", [some_money.pk])
    with pytest.raises(CommandError):
        run("audit_ledger")


@pytest.mark.corrupts_ledger
def test_audit_ledger_catches_a_deleted_transfer(some_money):
    tamper("DELETE FROM escrow_deposit", [])  # the record of each deposit goes with it
    tamper("DELETE FROM escrow_transfer WHERE kind = 'deposit'", [])
    with pytest.raises(CommandError):
        run("audit_ledger")


def test_audit_reputation_passes_after_real_events(db):
    task = TaskFactory.create()
    reputation_apply(
        agent_id=task.agent_id,
        task_id=task.pk,
        outcome=Outcome("success", fuel_used=10, fuel_limit=100, elapsed_ms=5),
    )
    assert "reputation audit passed" in run("audit_reputation")


@pytest.mark.corrupts_ledger
def test_audit_reputation_catches_a_tampered_score(db):
    task = TaskFactory.create()
    reputation_apply(agent_id=task.agent_id, task_id=task.pk, outcome=Outcome("failure"))
    tamper("UPDATE reputation_agentreputation SET score = 99 WHERE agent_id = %s", [task.agent_id])
    with pytest.raises(CommandError, match="reputation audit failed"):
        run("audit_reputation")


@pytest.mark.corrupts_ledger
def test_audit_reputation_catches_a_rewritten_event(db):
    task = TaskFactory.create()
    reputation_apply(agent_id=task.agent_id, task_id=task.pk, outcome=Outcome("failure"))
    # Consistent with itself (delta = after − before) and with the stored score, yet not
    # what the policy gives for a failure.
    tamper(
        "UPDATE reputation_reputationevent SET delta = -1, score_after = 49 WHERE task_id = %s",
        [task.pk.hex if connection.vendor == "sqlite" else task.pk],
    )
    tamper("UPDATE reputation_agentreputation SET score = 49 WHERE agent_id = %s", [task.agent_id])
    with pytest.raises(CommandError):
        run("audit_reputation")
