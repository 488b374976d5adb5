"""A real qcluster worker SIGKILLed between the provider's payment and its recording: the
withdrawal is still paid exactly once."""

from __future__ import annotations

import pytest

from escrow.audit import ledger_audit
from escrow.models import Account, Transfer, Withdrawal
from escrow.services import deposit_create, system_balance, wallet_id
from marketplace.withdrawals import funding_recover, withdrawal_request
from tests.factories import UserFactory
from tests.funding_provider import funding_mode_set, funding_ops
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CR = 1_000_000


def test_a_worker_killed_after_the_payout_is_recovered_as_paid_without_paying_again(
    settings, tmp_path, monkeypatch
):
    store = tmp_path / "funding.sqlite3"
    monkeypatch.setenv("TEST_FUNDING_STORE", str(store))
    settings.FUNDING_PROVIDER = "test"
    funding_mode_set("crash")  # pay, then SIGKILL the worker before it can record it
    alice = UserFactory.create(username="alice")
    deposit_create(user_id=alice.pk, amount=10 * CR, provider="dev")
    withdrawal, _ = withdrawal_request(user=alice, amount=6 * CR, idempotency_key="w")
    key = withdrawal.key

    cluster = Cluster(FUNDING_PROVIDER="test", TEST_FUNDING_STORE=str(store)).start()
    try:
        wait_for(
            lambda: bool(funding_ops()),
            timeout=60,
            message="the worker asked the provider",
            cluster=cluster,
        )
        withdrawal.refresh_from_db()
        assert withdrawal.status == "processing"  # paid out there, not recorded here
        assert Transfer.objects.filter(kind="withdrawal_payout").count() == 0
        funding_mode_set("ok")
        settings.FUNDING_RECOVER_AFTER_SECONDS = 0
        # The killed worker's lease holds recovery off until it runs out; let it run out.
        assert funding_recover()["withdrawals_paid"] == 0
        Withdrawal.objects.filter(pk=withdrawal.pk).update(processing_until=withdrawal.created_at)

        counts = funding_recover()

        assert counts["withdrawals_paid"] == 1
        withdrawal.refresh_from_db()
        assert withdrawal.status == "paid"
        # The broker resends the lost message to a respawned worker: a no-op by now.
        wait_for(lambda: True, timeout=1, message="")
    finally:
        cluster.kill()
    assert funding_ops() == [(key, "payout", 6 * CR, "paid", 1)]
    assert Transfer.objects.filter(kind="withdrawal_payout").count() == 1
    assert Account.objects.get(pk=wallet_id(user_id=alice.pk)).balance == 4 * CR
    assert system_balance(Account.Kind.PAYOUTS) == 0
    assert getattr(Withdrawal.objects.get().settlement, "amount", None) == 6 * CR
    assert ledger_audit().ok
