"""Withdrawals and crash-safe deposits at the service level: the money leaves the wallet
at once, settles exactly once whatever the provider does, and recovery finishes what a
crash left."""

from __future__ import annotations

import pytest
from django.db import connections

from escrow.audit import ledger_audit
from escrow.errors import IdempotencyConflict, InsufficientFunds
from escrow.models import Account, Deposit, Transfer, Withdrawal
from escrow.services import deposit_create, shard_for, system_account_id, system_balance, wallet_id
from escrow.withdrawals import WithdrawalStateError, WithdrawalTooSmall
from marketplace.withdrawals import (
    funding_recover,
    withdrawal_cancel_request,
    withdrawal_process,
    withdrawal_request,
)
from tests.funding_provider import (
    ProviderTimeout,
    TestFundingProvider,
    funding_ops,
)

pytestmark = pytest.mark.django_db

CR = 1_000_000


def balance_of(account_id: int) -> int:
    return Account.objects.get(pk=account_id).balance


def payouts() -> int:
    return system_balance(Account.Kind.PAYOUTS)


@pytest.fixture
def provider(provider, settings):
    """The test provider, and recovery looks at every pending deposit and withdrawal."""
    settings.FUNDING_RECOVER_AFTER_SECONDS = 0
    return provider


def test_a_withdrawal_takes_the_money_out_of_the_wallet_at_once(rich_alice):
    withdrawal, created = withdrawal_request(user=rich_alice, amount=3 * CR)

    assert created and withdrawal.status == "pending"
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 7 * CR
    assert payouts() == 3 * CR
    hold = Transfer.objects.get(kind="withdrawal")
    assert (hold.amount, hold.debit_account_id, hold.credit_account_id) == (
        3 * CR,
        wallet_id(user_id=rich_alice.pk),
        system_account_id(Account.Kind.PAYOUTS, shard_for(withdrawal.pk)),
    )


def test_a_withdrawal_below_the_minimum_or_beyond_the_balance_is_refused(rich_alice, settings):
    with pytest.raises(WithdrawalTooSmall):
        withdrawal_request(user=rich_alice, amount=CR - 1)
    settings.WITHDRAWAL_MIN = 1
    withdrawal_request(user=rich_alice, amount=1)
    with pytest.raises(InsufficientFunds):
        withdrawal_request(user=rich_alice, amount=10 * CR)
    assert Withdrawal.objects.count() == 1
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 10 * CR - 1


def test_a_repeated_key_returns_the_first_withdrawal_and_another_amount_conflicts(rich_alice):
    first, _ = withdrawal_request(user=rich_alice, amount=2 * CR, idempotency_key="k")
    again, created = withdrawal_request(user=rich_alice, amount=2 * CR, idempotency_key="k")

    assert (again.pk, created) == (first.pk, False)
    with pytest.raises(IdempotencyConflict):
        withdrawal_request(user=rich_alice, amount=3 * CR, idempotency_key="k")
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 8 * CR


def test_the_dev_provider_pays_at_once_and_payouts_go_to_the_outside_world(rich_alice):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=4 * CR)
    external_before = system_balance(Account.Kind.EXTERNAL)

    assert withdrawal_process(withdrawal.pk) == "paid"

    withdrawal.refresh_from_db()
    assert withdrawal.status == "paid" and withdrawal.paid_at is not None
    assert withdrawal.provider_reference == f"dev:{withdrawal.key}"
    assert payouts() == 0
    assert system_balance(Account.Kind.EXTERNAL) == external_before + 4 * CR
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 6 * CR
    assert getattr(withdrawal.settlement, "kind", None) == "withdrawal_payout"
    # A second message for it is a no-op.
    assert withdrawal_process(withdrawal.pk) == "not pending"


def test_a_disabled_dev_provider_fails_the_withdrawal_and_returns_the_money(rich_alice, settings):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=4 * CR)
    settings.DEV_FUNDING_ENABLED = False

    assert withdrawal_process(withdrawal.pk) == "failed"

    withdrawal.refresh_from_db()
    assert (withdrawal.status, withdrawal.paid_at) == ("failed", None)
    assert "disabled" in (withdrawal.failure or "")
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 10 * CR
    assert payouts() == 0


def test_a_provider_refusal_returns_the_money_to_the_wallet(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=5 * CR)
    provider("fail")

    assert withdrawal_process(withdrawal.pk) == "failed"

    withdrawal.refresh_from_db()
    assert (
        withdrawal.status == "failed"
        and getattr(withdrawal.settlement, "kind", None) == "withdrawal_return"
    )
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 10 * CR
    assert payouts() == 0
    assert funding_ops() == [(withdrawal.key, "payout", 5 * CR, "failed", 1)]


def test_a_timeout_leaves_it_processing_and_recovery_finds_it_paid_once(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=5 * CR)
    provider("timeout")

    with pytest.raises(ProviderTimeout):
        withdrawal_process(withdrawal.pk)
    withdrawal.refresh_from_db()
    assert withdrawal.status == "processing"
    assert payouts() == 5 * CR

    provider("ok")
    counts = funding_recover()

    assert counts["withdrawals_paid"] == 1
    withdrawal.refresh_from_db()
    assert withdrawal.status == "paid"
    assert Transfer.objects.filter(kind="withdrawal_payout").count() == 1
    assert funding_ops() == [(withdrawal.key, "payout", 5 * CR, "paid", 1)]
    assert payouts() == 0 and balance_of(wallet_id(user_id=rich_alice.pk)) == 5 * CR
    # Recovery again finds nothing to do.
    assert funding_recover()["withdrawals_paid"] == 0


def test_recovery_pays_a_claimed_withdrawal_the_provider_never_heard_of_once(rich_alice, provider):
    from escrow.withdrawals import withdrawal_claim

    withdrawal, _ = withdrawal_request(user=rich_alice, amount=2 * CR)
    assert withdrawal_claim(withdrawal_id=withdrawal.pk)  # then the worker died
    # ... and its lease ran out.
    Withdrawal.objects.filter(pk=withdrawal.pk).update(processing_until=withdrawal.created_at)

    assert funding_recover()["withdrawals_paid"] == 1
    assert funding_ops() == [(withdrawal.key, "payout", 2 * CR, "paid", 1)]


def test_a_pending_withdrawal_can_be_cancelled_once(rich_alice, bob):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=3 * CR)

    with pytest.raises(Exception, match="No such withdrawal"):
        withdrawal_cancel_request(user=bob, withdrawal_id=withdrawal.pk)
    cancelled = withdrawal_cancel_request(user=rich_alice, withdrawal_id=withdrawal.pk)

    assert cancelled.status == "cancelled"
    assert balance_of(wallet_id(user_id=rich_alice.pk)) == 10 * CR
    with pytest.raises(WithdrawalStateError):
        withdrawal_cancel_request(user=rich_alice, withdrawal_id=withdrawal.pk)
    assert withdrawal_process(withdrawal.pk) == "not pending"
    assert Transfer.objects.filter(kind="withdrawal_return").count() == 1


def test_two_deposits_without_a_key_have_references_of_their_own(alice):
    deposit_create(user_id=alice.pk, amount=CR)
    deposit_create(user_id=alice.pk, amount=CR)

    references = list(Deposit.objects.values_list("reference", flat=True))
    memos = list(Transfer.objects.filter(kind="deposit").values_list("memo", flat=True))
    assert len(set(references)) == 2 and len(set(memos)) == 2
    assert all(status == "completed" for status in Deposit.objects.values_list("status", flat=True))
    assert balance_of(wallet_id(user_id=alice.pk)) == 2 * CR


def test_a_refused_deposit_is_failed_and_a_retry_with_its_key_asks_again(alice, provider):
    provider("fail")
    with pytest.raises(Exception, match="refused"):
        deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")
    failed = Deposit.objects.get()
    assert (failed.status, failed.transfer_id) == ("failed", None)
    assert balance_of(wallet_id(user_id=alice.pk)) == 0

    provider("ok")
    transfer = deposit_create(user_id=alice.pk, amount=CR, idempotency_key="d1")

    deposit = Deposit.objects.get()
    assert (deposit.status, deposit.transfer_id) == ("completed", transfer.pk)
    assert deposit.reference != failed.reference
    assert sorted(op[3] for op in funding_ops()) == ["failed", "paid"]
    assert balance_of(wallet_id(user_id=alice.pk)) == CR


def test_a_deposit_crashed_after_the_provider_collected_is_completed_by_recovery(alice, provider):
    from escrow.deposits import deposit_begin

    deposit = deposit_begin(user_id=alice.pk, amount=CR, idempotency_key="k", provider="test")
    TestFundingProvider().collect(user_id=alice.pk, amount=CR, reference=deposit.reference)

    assert funding_recover()["deposits_completed"] == 1
    deposit.refresh_from_db()
    assert deposit.status == "completed"
    assert balance_of(wallet_id(user_id=alice.pk)) == CR
    # The client's retry with its key gets the same transfer back.
    again = deposit_create(user_id=alice.pk, amount=CR, idempotency_key="k")
    assert again.pk == deposit.transfer_id
    assert funding_ops()[0][4] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_withdrawals_take_only_what_the_balance_covers(alice, capsys):
    from tests.concurrency import run_threads

    deposit_create(user_id=alice.pk, amount=7 * CR + 500_000)
    made: list[int] = []
    refused: list[int] = []

    def withdraw(index: int) -> None:
        try:
            withdrawal, _ = withdrawal_request(user=alice, amount=CR, idempotency_key=f"w{index}")
            made.append(withdrawal.pk)
        except InsufficientFunds:
            refused.append(index)

    import time

    started = time.perf_counter()
    errors = run_threads(16, withdraw)
    elapsed = time.perf_counter() - started
    connections.close_all()

    assert not errors, errors[:3]
    assert (len(made), len(refused)) == (7, 9)
    assert balance_of(wallet_id(user_id=alice.pk)) == 500_000
    assert payouts() == 7 * CR
    assert ledger_audit().ok
    with capsys.disabled():
        print(f"\n16 concurrent withdrawals (7 fit) in {elapsed:.3f}s")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_withdrawal_throughput_under_concurrency(capsys):
    """Measure: 8 threads, each its own user, 40 withdrawals apiece (and 400 paid out)."""
    import threading
    import time

    from marketplace.services import user_create
    from tests.concurrency import run_threads

    users = [user_create(username=f"u{i}") for i in range(8)]
    for user in users:
        deposit_create(user_id=user.pk, amount=100 * CR)
    lock = threading.Lock()
    ids: list[int] = []

    def withdraw(index: int) -> None:
        for n in range(40):
            withdrawal, _ = withdrawal_request(user=users[index], amount=CR, idempotency_key=f"{n}")
            with lock:
                ids.append(withdrawal.pk)

    started = time.perf_counter()
    errors = run_threads(8, withdraw)
    asked = time.perf_counter() - started
    assert not errors, errors[:3]

    def pay(index: int) -> None:
        for withdrawal_id in ids[index::8]:
            assert withdrawal_process(withdrawal_id) == "paid"

    started = time.perf_counter()
    errors = run_threads(8, pay)
    paid = time.perf_counter() - started
    connections.close_all()
    assert not errors, errors[:3]
    assert Withdrawal.objects.filter(status="paid").count() == 320
    assert payouts() == 0
    assert ledger_audit().ok
    with capsys.disabled():
        print(
            f"\n320 withdrawals by 8 threads: asked in {asked:.2f}s ({320 / asked:.0f}/s), "
            f"paid out in {paid:.2f}s ({320 / paid:.0f}/s)"
        )


@pytest.mark.corrupts_ledger
def test_the_audit_catches_payouts_that_do_not_match_the_withdrawals_in_flight(rich_alice):
    from django.db import connection

    withdrawal, _ = withdrawal_request(user=rich_alice, amount=2 * CR)
    assert ledger_audit().ok
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE escrow_withdrawal SET amount = amount + 1 WHERE id = %s", [withdrawal.pk]
        )

    violations = ledger_audit().violations
    assert any("payouts account holds 2000000 µCR" in v for v in violations), violations
    assert any(f"withdrawal {withdrawal.pk} (pending)" in v for v in violations), violations


def test_paid_and_failed_withdrawals_are_webhook_events_with_the_withdrawal(rich_alice, settings):
    from marketplace.webhooks.events import event_data
    from marketplace.webhooks.models import WebhookDelivery
    from marketplace.webhooks.outbox import webhook_create

    endpoint = webhook_create(
        owner=rich_alice,
        url="http://127.0.0.1:9/hooks",
        events=["withdrawal.paid", "withdrawal.failed"],
    )
    paid, _ = withdrawal_request(user=rich_alice, amount=CR)
    failed, _ = withdrawal_request(user=rich_alice, amount=2 * CR)
    withdrawal_process(paid.pk)
    settings.DEV_FUNDING_ENABLED = False
    withdrawal_process(failed.pk)

    rows = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id")
    assert [(row.type, row.object_id) for row in rows] == [
        ("withdrawal.paid", str(paid.pk)),
        ("withdrawal.failed", str(failed.pk)),
    ]
    data = event_data("withdrawal.paid", str(paid.pk))["withdrawal"]
    assert (data["id"], data["amount"], data["status"]) == (paid.pk, CR, "paid")


def test_recovery_resends_a_pending_withdrawal_whose_message_was_lost(
    rich_alice, settings, monkeypatch
):
    import marketplace.withdrawals as service

    sent: list[tuple] = []
    monkeypatch.setattr(service, "service_send", lambda *args, **kwargs: sent.append(args))
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=CR)  # its message never left
    settings.FUNDING_RECOVER_AFTER_SECONDS = 3600

    assert funding_recover()["withdrawals_requeued"] == 0  # too young to be lost
    settings.FUNDING_RECOVER_AFTER_SECONDS = 0
    assert funding_recover()["withdrawals_requeued"] == 1

    assert sent == [("marketplace.withdrawals.withdrawal_process", withdrawal.pk)]
    assert withdrawal_process(withdrawal.pk) == "paid"
