"""The system accounts are split into shards (SPEC §16): one figure each, money kept apart."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings as django_settings

from escrow import system_accounts
from escrow.models import Account, Escrow, Transfer
from escrow.services import (
    deposit_create,
    escrow_create,
    escrow_fund,
    escrow_release,
    shard_for,
    system_account_id,
    system_balance,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_ids():
    system_accounts._system_ids.clear()
    yield
    system_accounts._system_ids.clear()


def test_every_system_account_has_its_shards(db):
    for kind in Account.SYSTEM_KINDS:
        shards = Account.objects.filter(kind=kind).values_list("shard", flat=True)
        assert sorted(shards) == list(range(django_settings.SYSTEM_ACCOUNT_SHARDS))


def test_an_escrow_moves_its_money_through_the_shard_of_its_task(alice, bob):
    deposit_create(user_id=alice.pk, amount=10_000)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=10_000)
    escrow_fund(escrow_id=escrow.pk)
    hold = system_account_id(Account.Kind.ESCROW, escrow.shard)
    assert Account.objects.get(pk=hold).balance == 10_000
    assert system_balance(Account.Kind.ESCROW) == 10_000
    escrow_release(escrow_id=escrow.pk, cost=4_000, fee=200)
    fee = Transfer.objects.get(escrow=escrow, kind="escrow_fee")
    assert fee.credit_account_id == system_account_id(Account.Kind.PLATFORM_FEES, escrow.shard)
    assert system_balance(Account.Kind.PLATFORM_FEES) == 200
    assert system_balance(Account.Kind.ESCROW) == 0


def test_the_shard_is_a_stable_function_of_the_id(settings):
    settings.SYSTEM_ACCOUNT_SHARDS = 16
    key = uuid.UUID("00000000-0000-0000-0000-000000000021")
    assert shard_for(key) == 0x21 % 16
    assert shard_for(37) == 37 % 16
    assert shard_for("withdrawal-7") == shard_for("withdrawal-7")


def test_raising_the_shard_count_keeps_each_escrows_money_where_it_was(
    alice, bob, settings, fresh_ids
):
    settings.SYSTEM_ACCOUNT_SHARDS = 4
    deposit_create(user_id=alice.pk, amount=40_000)
    escrows = []
    for _ in range(4):
        escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=10_000)
        escrow_fund(escrow_id=escrow.pk)
        escrows.append(Escrow.objects.get(pk=escrow.pk))
    settings.SYSTEM_ACCOUNT_SHARDS = 64  # shards 16..63 do not exist yet
    for escrow in escrows:
        escrow_release(escrow_id=escrow.pk, cost=1_000, fee=100)
        hold = Transfer.objects.get(escrow=escrow, kind="escrow_hold")
        payout = Transfer.objects.get(escrow=escrow, kind="escrow_refund")
        assert hold.credit_account_id == payout.debit_account_id  # the same shard
    assert system_balance(Account.Kind.ESCROW) == 0
    assert system_balance(Account.Kind.PLATFORM_FEES) == 400


def test_a_shard_past_the_existing_ones_is_created_on_first_use(alice, settings, fresh_ids):
    settings.SYSTEM_ACCOUNT_SHARDS = 64
    assert not Account.objects.filter(kind=Account.Kind.EXTERNAL, shard=40).exists()
    pk = system_account_id(Account.Kind.EXTERNAL, 40)
    assert Account.objects.get(pk=pk).shard == 40
    assert system_account_id(Account.Kind.EXTERNAL, 40) == pk
