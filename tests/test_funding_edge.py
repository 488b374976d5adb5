"""Money at the payment provider's edge (SPEC §18): an answer that never came is asked
again under the same key, only an explicit refusal undoes anything, a payout in flight is
never sent twice, and the key the provider sees names one operation in any database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from escrow.deposits import DepositPending, deposit_begin, deposit_fail
from escrow.models import Account, Deposit, Transfer, Withdrawal
from escrow.services import deposit_create, system_balance, wallet_id
from escrow.withdrawals import withdrawal_claim
from marketplace.withdrawals import funding_recover, withdrawal_process, withdrawal_request
from tests.funding_provider import (
    funding_land,
    funding_ops,
)

pytestmark = pytest.mark.django_db

CR = 1_000_000


@pytest.fixture
def provider(provider, settings):
    """The test provider, and recovery looks at every pending deposit and withdrawal."""
    settings.FUNDING_RECOVER_AFTER_SECONDS = 0
    return provider


def wallet(user) -> int:
    return Account.objects.get(pk=wallet_id(user_id=user.pk)).balance


def expire_lease(withdrawal: Withdrawal) -> None:
    """Time passes beyond the lease of whoever claimed it (a worker that died)."""
    Withdrawal.objects.filter(pk=withdrawal.pk).update(
        processing_until=timezone.now() - timedelta(seconds=1)
    )


# --- deposits -----------------------------------------------------------------------------


def test_a_deposit_whose_answer_was_lost_stays_pending_and_is_credited_once_when_it_lands(
    alice, provider
):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")
    deposit = Deposit.objects.get()
    reference = deposit.reference

    # The provider's lookup doesn't see it yet ("unknown"): asked again, never failed.
    funding_recover()
    deposit.refresh_from_db()
    assert (deposit.status, deposit.reference, deposit.failure) == ("pending", reference, "")
    assert wallet(alice) == 0

    funding_land(reference)  # the collection lands late
    assert funding_recover()["deposits_completed"] == 1

    deposit.refresh_from_db()
    assert deposit.status == "completed" and deposit.transfer is not None
    assert wallet(alice) == CR
    assert [(key, kind, amount, status) for key, kind, amount, status, _ in funding_ops()] == [
        (reference, "collect", CR, "paid")
    ]
    # Recovery again, and the client's retry with its key: nothing more moves.
    assert funding_recover()["deposits_completed"] == 0
    assert deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1").pk == (
        deposit.transfer_id
    )
    assert Transfer.objects.filter(kind="deposit").count() == 1
    assert wallet(alice) == CR
    assert len(funding_ops()) == 1


def test_a_retry_with_the_same_key_after_recovery_asks_under_the_same_reference(alice, provider):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")
    reference = Deposit.objects.get().reference
    funding_recover()  # unknown at the provider
    funding_land(reference)
    provider("ok")

    deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")

    deposit = Deposit.objects.get()
    assert (deposit.status, deposit.reference) == ("completed", reference)
    collected = [op for op in funding_ops() if op[3] == "paid"]
    assert [(op[0], op[2]) for op in collected] == [(reference, CR)]
    assert wallet(alice) == CR


def test_a_retry_of_a_deposit_failed_on_an_unknown_answer_never_mints_a_new_reference(
    alice, provider
):
    # A deposit failed only because the provider had no answer yet (as recovery used to):
    # the provider may still collect it, so a retry asks about that reference first.
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")
    first = Deposit.objects.get()
    deposit_fail(deposit_id=first.pk, failure="recovered: provider said unknown")
    provider("ok")

    # Still no answer: the retry asks again under the same reference, and waits.
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")
    assert Deposit.objects.values_list("status", "reference").get() == (
        "pending",
        first.reference,
    )

    funding_land(first.reference)
    transfer = deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")

    deposit = Deposit.objects.get()
    assert (deposit.status, deposit.reference, deposit.transfer_id) == (
        "completed",
        first.reference,
        transfer.pk,
    )
    assert [(op[0], op[3]) for op in funding_ops()] == [(first.reference, "paid")]
    assert wallet(alice) == CR


def test_a_failed_deposit_the_provider_collected_is_completed_by_a_retry_not_asked_again(
    alice, provider
):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=2 * CR, idempotency_key="d1")
    first = Deposit.objects.get()
    deposit_fail(deposit_id=first.pk, failure="recovered: provider said unknown")
    funding_land(first.reference)

    deposit_create(user_id=alice.pk, amount=2 * CR, idempotency_key="d1")

    assert Deposit.objects.values_list("status", "reference").get() == (
        "completed",
        first.reference,
    )
    assert funding_ops() == [(first.reference, "collect", 2 * CR, "paid", 1)]
    assert wallet(alice) == 2 * CR


def test_a_collection_answered_pending_then_collected_is_credited_once(alice, provider):
    provider("pending")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=3 * CR)
    deposit = Deposit.objects.get()

    assert funding_recover()["deposits_pending"] == 1
    funding_land(deposit.reference)
    assert funding_recover()["deposits_completed"] == 1
    assert funding_recover()["deposits_completed"] == 0

    deposit.refresh_from_db()
    assert deposit.status == "completed"
    assert wallet(alice) == 3 * CR
    assert Transfer.objects.filter(kind="deposit").count() == 1


def test_recovery_asks_again_for_a_deposit_the_provider_never_heard_of(alice, provider):
    # The process died between committing the pending row and asking the provider.
    deposit = deposit_begin(user_id=alice.pk, amount=CR, idempotency_key=None, provider="test")

    assert funding_recover()["deposits_completed"] == 1

    deposit.refresh_from_db()
    assert deposit.status == "completed"
    assert funding_ops() == [(deposit.reference, "collect", CR, "paid", 1)]
    assert wallet(alice) == CR


def test_only_a_refusal_fails_a_deposit_in_recovery(alice, provider):
    deposit = deposit_begin(user_id=alice.pk, amount=CR, idempotency_key=None, provider="test")
    provider("fail")

    assert funding_recover()["deposits_failed"] == 1

    deposit.refresh_from_db()
    assert (deposit.status, deposit.transfer_id) == ("failed", None)
    assert wallet(alice) == 0


def test_a_503_after_collecting_leaves_the_deposit_pending_and_it_is_credited_once(alice, provider):
    provider("unavailable")  # collects, then its gateway answers 503 (a DomainError)
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d503")
    deposit = Deposit.objects.get()
    assert (deposit.status, deposit.transfer_id) == ("pending", None)  # not failed
    assert wallet(alice) == 0

    provider("ok")
    assert funding_recover()["deposits_completed"] == 1

    deposit.refresh_from_db()
    assert deposit.status == "completed"
    # Credited from the provider's word, under the one reference it collected.
    assert funding_ops() == [(deposit.reference, "collect", CR, "paid", 1)]
    assert wallet(alice) == CR
    # A retry with the key answers with that credit, and collects nothing more.
    deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d503")
    assert wallet(alice) == CR
    assert Transfer.objects.filter(kind=Transfer.Kind.DEPOSIT).count() == 1


def test_recovery_counts_a_deposit_still_without_an_answer_as_pending(alice, provider):
    deposit = deposit_begin(user_id=alice.pk, amount=CR, idempotency_key=None, provider="test")
    provider("lost")  # takes the request and answers nothing

    counts = funding_recover()

    assert (counts["deposits_pending"], counts["deposits_failed"]) == (1, 0)
    deposit.refresh_from_db()
    assert deposit.status == "pending"
    assert wallet(alice) == 0


# --- withdrawals --------------------------------------------------------------------------


def test_an_error_after_paying_leaves_the_withdrawal_processing_for_recovery(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=5 * CR)
    external = system_balance(Account.Kind.EXTERNAL)
    provider("unavailable")  # pays, then answers 503

    assert withdrawal_process(withdrawal.pk) == "processing"

    withdrawal.refresh_from_db()
    assert withdrawal.status == "processing"
    assert wallet(rich_alice) == 5 * CR  # the money did not come back
    assert system_balance(Account.Kind.PAYOUTS) == 5 * CR

    provider("ok")
    assert funding_recover()["withdrawals_paid"] == 1

    withdrawal.refresh_from_db()
    assert withdrawal.status == "paid"
    assert funding_ops() == [(withdrawal.key, "payout", 5 * CR, "paid", 1)]
    assert wallet(rich_alice) == 5 * CR
    assert system_balance(Account.Kind.PAYOUTS) == 0
    assert system_balance(Account.Kind.EXTERNAL) == external + 5 * CR
    assert not Transfer.objects.filter(kind="withdrawal_return").exists()


def test_recovery_never_resends_a_payout_whose_lease_is_live(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=2 * CR)
    assert withdrawal_claim(withdrawal_id=withdrawal.pk)  # a worker is asking the provider now
    withdrawal.refresh_from_db()
    assert withdrawal.processing_until
    assert withdrawal.processing_until > timezone.now() + timedelta(seconds=30)

    counts = funding_recover()

    assert (counts["withdrawals_paid"], counts["withdrawals_failed"]) == (0, 0)
    assert funding_ops() == []
    assert Withdrawal.objects.get().status == "processing"

    expire_lease(withdrawal)  # the worker died: now recovery asks, once
    assert funding_recover()["withdrawals_paid"] == 1
    assert funding_recover()["withdrawals_paid"] == 0
    assert funding_ops() == [(withdrawal.key, "payout", 2 * CR, "paid", 1)]
    assert wallet(rich_alice) == 8 * CR


def test_a_refusal_still_returns_the_money(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=5 * CR)
    provider("fail")

    assert withdrawal_process(withdrawal.pk) == "failed"

    assert wallet(rich_alice) == 10 * CR
    assert system_balance(Account.Kind.PAYOUTS) == 0


def test_the_key_the_provider_sees_is_random_and_kept_on_the_row(rich_alice, provider):
    first, _ = withdrawal_request(user=rich_alice, amount=CR)
    second, _ = withdrawal_request(user=rich_alice, amount=CR)
    withdrawal_process(first.pk)
    withdrawal_process(second.pk)

    keys = list(Withdrawal.objects.order_by("pk").values_list("provider_key", flat=True))
    assert keys == [first.key, second.key]
    assert all(key.startswith("wd_") and len(key) == 35 for key in keys)
    assert keys[0] != keys[1]
    assert sorted(op[0] for op in funding_ops()) == sorted(keys)


@pytest.mark.django_db(transaction=True)
def test_existing_withdrawals_keep_the_key_they_were_paid_under(alice, settings):
    """A withdrawal from before random keys may already be known to the provider as
    `withdrawal:<id>`: the migration gives it that key, and a processing one a lease."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    settings.FUNDING_PROVIDER = "dev"
    deposit_create(user_id=alice.pk, amount=10 * CR)
    done, _ = withdrawal_request(user=alice, amount=CR)
    withdrawal_process(done.pk)
    stuck, _ = withdrawal_request(user=alice, amount=2 * CR)
    withdrawal_claim(withdrawal_id=stuck.pk)
    executor = MigrationExecutor(connection)
    executor.migrate([("escrow", "0008_system_account_shards")])
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("escrow"))

    rows = Withdrawal.objects.order_by("pk").values_list("pk", "provider_key", "processing_until")
    stuck_at = Withdrawal.objects.get(pk=stuck.pk).processing_at
    assert stuck_at is not None
    assert list(rows) == [
        (done.pk, f"withdrawal:{done.pk}", None),
        (stuck.pk, f"withdrawal:{stuck.pk}", stuck_at + timedelta(seconds=120)),
    ]
    fresh, _ = withdrawal_request(user=alice, amount=CR)
    assert fresh.key.startswith("wd_")
    # Once its lease runs out, recovery asks the provider under the old key.
    Withdrawal.objects.filter(pk=stuck.pk).update(processing_until=stuck_at)
    assert funding_recover()["withdrawals_paid"] == 1
    assert Withdrawal.objects.get(pk=stuck.pk).provider_reference == f"dev:withdrawal:{stuck.pk}"


def test_an_api_deposit_without_an_answer_is_503_pending_and_a_retry_credits_it_once(
    alice, provider
):
    client = APIClient()
    client.force_authenticate(alice)
    before = wallet(alice)
    provider("timeout")  # the provider collects, and its answer is lost
    headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": "deposit-once"}
    response = client.post("/api/v1/wallet/deposits/", {"amount": CR}, **headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "deposit_pending"
    assert response["Retry-After"] == "30"
    assert Deposit.objects.get().status == Deposit.Status.PENDING
    assert wallet(alice) == before
    provider("ok")
    again = client.post("/api/v1/wallet/deposits/", {"amount": CR}, **headers)
    assert again.status_code == 201
    assert wallet(alice) == before + CR
    assert [op[2:4] for op in funding_ops()] == [(CR, "paid")]  # collected once
