from __future__ import annotations

import pytest

from escrow.errors import EscrowStateError, IdempotencyConflict, InsufficientFunds, InvalidAmount
from escrow.models import Account, Escrow, Transfer
from escrow.services import (
    deposit_create,
    escrow_cancel,
    escrow_complete,
    escrow_create,
    escrow_fund,
    escrow_refund,
    escrow_release,
    system_balance,
    transfer_create,
    wallet_id,
)


def balance(user) -> int:
    return Account.objects.get(user=user).balance


@pytest.fixture
def funded_alice(alice):
    deposit_create(user_id=alice.pk, amount=1_000_000)
    return alice


def test_deposit_moves_money_from_outside_into_the_wallet(alice):
    transfer = deposit_create(user_id=alice.pk, amount=2_500_000)
    assert transfer.kind == Transfer.Kind.DEPOSIT
    assert balance(alice) == 2_500_000
    assert system_balance("external") == -2_500_000


def test_deposit_with_the_same_key_happens_once(alice):
    first = deposit_create(user_id=alice.pk, amount=700, idempotency_key="k1")
    again = deposit_create(user_id=alice.pk, amount=700, idempotency_key="k1")
    assert again.pk == first.pk
    assert balance(alice) == 700
    assert Transfer.objects.count() == 1


def test_deposit_keys_are_per_user(alice, bob):
    deposit_create(user_id=alice.pk, amount=700, idempotency_key="same")
    deposit_create(user_id=bob.pk, amount=300, idempotency_key="same")
    assert (balance(alice), balance(bob)) == (700, 300)


def test_deposit_key_reused_with_another_amount_is_a_conflict(alice):
    deposit_create(user_id=alice.pk, amount=700, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        deposit_create(user_id=alice.pk, amount=701, idempotency_key="k1")
    assert balance(alice) == 700


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", True, None])
def test_deposit_refuses_anything_but_a_positive_integer(alice, amount):
    with pytest.raises(InvalidAmount):
        deposit_create(user_id=alice.pk, amount=amount)
    assert Transfer.objects.count() == 0


def test_deposit_is_refused_when_dev_funding_is_off(alice, settings):
    from escrow.errors import FundingUnavailable

    settings.DEV_FUNDING_ENABLED = False
    with pytest.raises(FundingUnavailable):
        deposit_create(user_id=alice.pk, amount=10)
    assert balance(alice) == 0


def test_transfer_cannot_overdraw_a_wallet(funded_alice, bob):
    with pytest.raises(InsufficientFunds):
        transfer_create(
            debit_account_id=wallet_id(user_id=funded_alice.pk),
            credit_account_id=wallet_id(user_id=bob.pk),
            amount=1_000_001,
            kind=Transfer.Kind.DEPOSIT,
        )
    assert (balance(funded_alice), balance(bob)) == (1_000_000, 0)


def test_escrow_release_pays_cost_minus_fee_and_refunds_the_rest(funded_alice, bob):
    escrow = escrow_create(payer_user_id=funded_alice.pk, payee_user_id=bob.pk, amount=600_000)
    escrow_fund(escrow_id=escrow.pk)
    assert balance(funded_alice) == 400_000
    assert system_balance("escrow") == 600_000

    escrow = escrow_release(escrow_id=escrow.pk, cost=250_001, fee=12_500)

    assert (escrow.status, escrow.cost, escrow.fee, escrow.refund) == (
        "released",
        250_001,
        12_500,
        349_999,
    )
    assert balance(funded_alice) == 400_000 + 349_999
    assert balance(bob) == 250_001 - 12_500
    assert system_balance("platform_fees") == 12_500
    assert system_balance("escrow") == 0
    kinds = sorted(Transfer.objects.filter(escrow=escrow).values_list("kind", "amount"))
    assert kinds == [
        ("escrow_fee", 12_500),
        ("escrow_hold", 600_000),
        ("escrow_payout", 237_501),
        ("escrow_refund", 349_999),
    ]


def test_release_of_the_whole_amount_writes_no_zero_refund(funded_alice, bob):
    escrow = escrow_create(payer_user_id=funded_alice.pk, payee_user_id=bob.pk, amount=1000)
    escrow_fund(escrow_id=escrow.pk)
    escrow_release(escrow_id=escrow.pk, cost=1000, fee=0)
    assert set(Transfer.objects.filter(escrow=escrow).values_list("kind", flat=True)) == {
        "escrow_hold",
        "escrow_payout",
    }
    assert balance(bob) == 1000


def test_escrow_refund_returns_everything(funded_alice, bob):
    escrow = escrow_create(payer_user_id=funded_alice.pk, payee_user_id=bob.pk, amount=600_000)
    escrow_fund(escrow_id=escrow.pk)
    escrow = escrow_refund(escrow_id=escrow.pk)
    assert (escrow.status, escrow.refund) == ("refunded", 600_000)
    assert balance(funded_alice) == 1_000_000
    assert balance(bob) == 0


def test_an_escrow_resolves_exactly_once(funded_alice, bob):
    escrow = escrow_create(payer_user_id=funded_alice.pk, payee_user_id=bob.pk, amount=100)
    escrow_fund(escrow_id=escrow.pk)
    escrow_release(escrow_id=escrow.pk, cost=40, fee=2)
    for attempt in (
        lambda: escrow_release(escrow_id=escrow.pk, cost=40, fee=2),
        lambda: escrow_refund(escrow_id=escrow.pk),
        lambda: escrow_cancel(escrow_id=escrow.pk),
        lambda: escrow_fund(escrow_id=escrow.pk),
    ):
        with pytest.raises(EscrowStateError):
            attempt()
    assert balance(funded_alice) == 1_000_000 - 40
    assert balance(bob) == 38


def test_funding_with_too_little_money_changes_nothing(alice, bob):
    deposit_create(user_id=alice.pk, amount=99)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=100)
    with pytest.raises(InsufficientFunds):
        escrow_fund(escrow_id=escrow.pk)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.PENDING
    assert balance(alice) == 99


@pytest.mark.parametrize(("cost", "fee"), [(101, 0), (50, 51), (-1, 0), (10, -1)])
def test_release_refuses_amounts_that_do_not_fit(funded_alice, bob, cost, fee):
    escrow = escrow_create(payer_user_id=funded_alice.pk, payee_user_id=bob.pk, amount=100)
    escrow_fund(escrow_id=escrow.pk)
    with pytest.raises(InvalidAmount):
        escrow_release(escrow_id=escrow.pk, cost=cost, fee=fee)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED


def test_cancel_a_pending_escrow_moves_nothing(alice, bob):
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=100)
    assert escrow_cancel(escrow_id=escrow.pk).status == Escrow.Status.CANCELLED
    with pytest.raises(EscrowStateError):
        escrow_fund(escrow_id=escrow.pk)
    assert Transfer.objects.count() == 0


def test_a_channel_escrow_completes_without_holding_funds(alice, bob):
    from escrow.channels import channel_open
    from tests.factories import AgentFactory

    deposit_create(user_id=alice.pk, amount=1_000)
    agent = AgentFactory.create(owner=bob)
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=1_000
    )
    escrow = escrow_create(
        payer_user_id=alice.pk, payee_user_id=bob.pk, amount=100, channel_id=channel.pk
    )
    with pytest.raises(EscrowStateError):
        escrow_fund(escrow_id=escrow.pk)
    escrow = escrow_complete(escrow_id=escrow.pk, cost=60, fee=3)
    assert (escrow.status, escrow.cost, escrow.fee) == ("completed", 60, 3)
    with pytest.raises(EscrowStateError):
        escrow_cancel(escrow_id=escrow.pk)
    assert Transfer.objects.exclude(kind="deposit").count() == 1  # the channel deposit only
    # The audit sees a completed escrow whose cost the channel never redeemed.
    from escrow.audit import ledger_audit

    assert any("redeemed" in v for v in ledger_audit().violations)
    from escrow.models import PaymentChannel

    PaymentChannel.objects.filter(pk=channel.pk).update(redeemed=60, fees=3, authorized=60)
