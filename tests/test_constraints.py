"""The database itself refuses corrupt money rows, whatever code (or person) writes them."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from escrow.models import Account, Escrow
from escrow.services import (
    deposit_create,
    escrow_create,
    escrow_fund,
    escrow_release,
    system_account_id,
)
from reputation.models import AgentReputation
from reputation.policies import Outcome
from reputation.services import reputation_apply
from tests.factories import TaskFactory


def sql(statement: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_a_wallet_cannot_go_negative(alice):
    deposit_create(user_id=alice.pk, amount=10)
    with pytest.raises(IntegrityError):
        sql("UPDATE escrow_account SET balance = balance - 11 WHERE user_id = %s", [alice.pk])
    assert Account.objects.get(user=alice).balance == 10


def test_system_holding_accounts_cannot_go_negative(db):
    with pytest.raises(IntegrityError):
        sql(
            "UPDATE escrow_account SET balance = -1 WHERE id = %s", [system_account_id("escrow", 0)]
        )


def test_an_escrow_cannot_be_settled_twice(alice, bob):
    deposit_create(user_id=alice.pk, amount=1_000)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=1_000)
    escrow_fund(escrow_id=escrow.pk)
    escrow_release(escrow_id=escrow.pk, cost=400, fee=0)
    hold = system_account_id("escrow", escrow.shard)
    payer = Account.objects.get(user=alice).pk
    with pytest.raises(IntegrityError):
        sql(
            "INSERT INTO escrow_transfer (debit_account_id, credit_account_id, amount, kind, "
            "escrow_id, memo, created_at) "
            "VALUES (%s, %s, 600, 'escrow_refund', %s, '', CURRENT_TIMESTAMP)",
            [hold, payer, escrow.pk],
        )


def test_a_transfer_amount_must_be_positive(alice):
    external, wallet = system_account_id("external", 0), Account.objects.get(user=alice).pk
    with pytest.raises(IntegrityError):
        sql(
            "INSERT INTO escrow_transfer (debit_account_id, credit_account_id, amount, kind, memo, "
            "created_at) VALUES (%s, %s, 0, 'deposit', '', CURRENT_TIMESTAMP)",
            [external, wallet],
        )


def test_a_released_escrow_must_add_up(alice, bob):
    deposit_create(user_id=alice.pk, amount=1_000)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=1_000)
    escrow_fund(escrow_id=escrow.pk)
    with pytest.raises(IntegrityError):
        sql(
            "UPDATE escrow_escrow SET status='released', cost=500, fee=0, refund=600 WHERE id=%s",
            [escrow.pk],
        )
    assert Escrow.objects.get(pk=escrow.pk).status == "funded"


def test_a_task_gets_one_reputation_event(db):
    task = TaskFactory.create()
    event = reputation_apply(agent_id=task.agent_id, task_id=task.pk, outcome=Outcome("failure"))
    with pytest.raises(IntegrityError):
        sql(
            "INSERT INTO reputation_reputationevent (agent_id, task_id, outcome, reason, policy, "
            "fuel_used, fuel_limit, elapsed_ms, delta, score_before, score_after, created_at) "
            "VALUES (%s, %s, 'success', '', 'x', 0, 0, 0, 0, 45, 45, CURRENT_TIMESTAMP)",
            [task.agent_id, task.pk.hex if connection.vendor == "sqlite" else task.pk],
        )
    assert event.task_id == task.pk


def test_a_repeated_reputation_call_for_a_task_is_a_no_op(db):
    task = TaskFactory.create()
    first = reputation_apply(agent_id=task.agent_id, task_id=task.pk, outcome=Outcome("failure"))
    again = reputation_apply(agent_id=task.agent_id, task_id=task.pk, outcome=Outcome("failure"))
    assert again.pk == first.pk
    assert AgentReputation.objects.get(agent=task.agent).score == 45
