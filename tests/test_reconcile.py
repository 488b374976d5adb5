"""Daily reconciliation with the provider's own records (SPEC §18): a collection nobody
credited is credited once; a payout whose state differs is flagged for operators, never
fixed by moving money a second time; a second run changes nothing."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from escrow.deposits import DepositPending, deposit_fail
from escrow.models import Account, Deposit, Transfer, Withdrawal
from escrow.payout_models import FundingDiscrepancy
from escrow.reconcile import funding_reconcile
from escrow.services import deposit_create, system_balance, wallet_id
from marketplace.withdrawals import withdrawal_process, withdrawal_request
from tests.funding_provider import (
    ProviderTimeout,
    funding_land,
    funding_ops,
    funding_record_set,
    funding_store_reset,
)

pytestmark = pytest.mark.django_db

CR = 1_000_000


def wallet(user) -> int:
    return Account.objects.get(pk=wallet_id(user_id=user.pk)).balance


def reconcile() -> dict[str, int]:
    now = timezone.now()
    return funding_reconcile(since=now - timedelta(days=1), until=now + timedelta(seconds=1))


def money() -> dict[int, int]:
    """Every account's balance: what a second run must leave as it found."""
    return dict(Account.objects.values_list("pk", "balance"))


def open_flags() -> list[tuple[str, str, str, str, int | None, int | None]]:
    return list(
        FundingDiscrepancy.objects.filter(resolved_at=None)
        .order_by("kind", "reference")
        .values_list(
            "kind", "reference", "our_status", "provider_status", "our_amount", "provider_amount"
        )
    )


def paid(user, amount: int) -> Withdrawal:
    withdrawal, _ = withdrawal_request(user=user, amount=amount)
    assert withdrawal_process(withdrawal.pk) == "paid"
    withdrawal.refresh_from_db()
    return withdrawal


# --- collections ------------------------------------------------------------------------


def test_a_collection_left_pending_here_is_credited_once(alice, provider):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=3 * CR, idempotency_key="d")
    deposit = Deposit.objects.get()
    funding_land(deposit.reference)

    assert reconcile()["credited"] == 1
    before = money()
    again = reconcile()

    assert again["credited"] == 0
    assert money() == before
    deposit.refresh_from_db()
    assert deposit.status == "completed" and deposit.transfer is not None
    assert wallet(alice) == 3 * CR
    assert Transfer.objects.filter(kind="deposit").count() == 1
    assert open_flags() == []


def test_a_failed_deposit_the_provider_collected_is_completed_with_its_transfer(alice, provider):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=2 * CR)
    deposit = Deposit.objects.get()
    deposit_fail(deposit_id=deposit.pk, failure="recovered: provider said unknown")
    funding_land(deposit.reference)

    assert reconcile()["credited"] == 1
    assert reconcile()["credited"] == 0

    deposit.refresh_from_db()
    assert (deposit.status, deposit.failure) == ("completed", "")
    assert getattr(deposit.transfer, "amount", None) == 2 * CR
    assert wallet(alice) == 2 * CR
    assert funding_ops() == [(deposit.reference, "collect", 2 * CR, "paid", 1)]


def test_a_collection_nobody_here_asked_for_is_flagged_not_credited(alice, provider):
    funding_record_set("dep_nobody", kind="collect", amount=CR, status="paid")
    before = money()

    reconcile()
    reconcile()

    assert money() == before
    assert open_flags() == [("collect_unmatched", "dep_nobody", "missing", "paid", None, CR)]


def test_a_collection_of_another_amount_is_flagged_not_credited(alice, provider):
    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=CR)
    deposit = Deposit.objects.get()
    funding_record_set(deposit.reference, kind="collect", amount=5 * CR, status="paid")

    assert reconcile()["credited"] == 0
    assert wallet(alice) == 0
    assert open_flags() == [("amount_mismatch", deposit.reference, "pending", "paid", CR, 5 * CR)]


def test_a_credit_the_provider_says_it_never_collected_is_flagged(alice, provider):
    deposit_create(user_id=alice.pk, amount=CR)
    deposit = Deposit.objects.get()
    funding_record_set(deposit.reference, kind="collect", amount=CR, status="failed")
    later = Deposit.objects.create(
        user=alice, amount=CR, reference="dep_later", provider="test", status="pending"
    )
    del later  # pending and unknown there: recovery's business, not drift
    before = money()

    reconcile()
    reconcile()

    assert money() == before
    assert open_flags() == [
        ("credit_uncollected", deposit.reference, "completed", "failed", CR, CR)
    ]


# --- payouts ----------------------------------------------------------------------------


def test_a_payout_paid_there_and_failed_here_is_flagged_and_no_money_moves(rich_alice, provider):
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=4 * CR)
    provider("fail")
    withdrawal_process(withdrawal.pk)
    withdrawal.refresh_from_db()
    funding_record_set(withdrawal.key, kind="payout", amount=4 * CR, status="paid")
    before = money()

    counts = reconcile()
    reconcile()

    assert counts["flagged"] == 1
    assert money() == before
    assert wallet(rich_alice) == 10 * CR
    assert open_flags() == [("payout_paid_there", withdrawal.key, "failed", "paid", 4 * CR, 4 * CR)]
    assert Withdrawal.objects.get().status == "failed"


def test_a_payout_paid_here_and_failed_there_is_flagged(rich_alice, provider):
    withdrawal = paid(rich_alice, 3 * CR)
    funding_record_set(withdrawal.key, kind="payout", amount=3 * CR, status="failed")
    before = money()

    reconcile()
    reconcile()

    assert money() == before
    assert open_flags() == [("payout_paid_here", withdrawal.key, "paid", "failed", 3 * CR, 3 * CR)]


def test_a_payout_paid_here_the_provider_has_no_record_of_is_flagged(rich_alice, provider):
    withdrawal = paid(rich_alice, 3 * CR)
    funding_store_reset()  # the provider lost it

    reconcile()
    reconcile()

    assert open_flags() == [("payout_paid_here", withdrawal.key, "paid", "unknown", 3 * CR, None)]


def test_a_payout_paid_there_with_no_withdrawal_here_is_flagged(rich_alice, provider):
    funding_record_set("wd_0123", kind="payout", amount=7 * CR, status="paid")
    before = money()

    reconcile()
    reconcile()

    assert money() == before
    assert open_flags() == [("payout_paid_there", "wd_0123", "missing", "paid", None, 7 * CR)]


def test_a_payout_of_another_amount_is_flagged(rich_alice, provider):
    withdrawal = paid(rich_alice, 3 * CR)
    funding_record_set(withdrawal.key, kind="payout", amount=2 * CR, status="paid")

    reconcile()

    assert open_flags() == [("amount_mismatch", withdrawal.key, "paid", "paid", 3 * CR, 2 * CR)]


def test_agreeing_records_and_payouts_still_in_flight_are_not_drift(rich_alice, provider):
    paid(rich_alice, CR)
    deposit_create(user_id=rich_alice.pk, amount=CR)
    in_flight, _ = withdrawal_request(user=rich_alice, amount=CR)
    provider("pending")
    with pytest.raises(ProviderTimeout):
        withdrawal_process(in_flight.pk)

    counts = reconcile()

    assert counts["flagged"] == 0 and counts["credited"] == 0
    assert open_flags() == []


def test_a_resolved_flag_is_not_raised_again(rich_alice, provider):
    withdrawal = paid(rich_alice, CR)
    funding_record_set(withdrawal.key, kind="payout", amount=CR, status="failed")
    reconcile()
    FundingDiscrepancy.objects.update(resolved_at=timezone.now(), notes="refunded by hand")

    assert reconcile()["flagged"] == 0
    assert FundingDiscrepancy.objects.count() == 1


def test_records_outside_the_window_are_not_read(alice, provider):
    old = (timezone.now() - timedelta(days=3)).timestamp()
    funding_record_set("dep_old", kind="collect", amount=CR, status="paid", at=old)

    reconcile()

    assert open_flags() == []


def test_the_dev_provider_keeps_no_records_and_nothing_is_flagged(rich_alice, settings):
    settings.FUNDING_PROVIDER = "dev"
    withdrawal, _ = withdrawal_request(user=rich_alice, amount=CR)
    withdrawal_process(withdrawal.pk)

    assert reconcile() == {"records": 0, "credited": 0, "flagged": 0, "errors": 0}
    assert FundingDiscrepancy.objects.count() == 0


# --- how it runs, and where operators see it ----------------------------------------------


def test_the_command_reconciles_a_window(rich_alice, provider):
    funding_record_set("wd_cmd", kind="payout", amount=CR, status="paid")
    out = StringIO()

    call_command("reconcile_funding", "--hours", "2", stdout=out)

    assert "flagged 1" in out.getvalue()
    assert open_flags()[0][:2] == ("payout_paid_there", "wd_cmd")


def test_it_runs_daily_from_a_schedule_once_across_hosts(rich_alice, provider):
    from execution.tasks import reconcile_funding

    schedule = Schedule.objects.get(func="execution.tasks.reconcile_funding")
    assert (schedule.schedule_type, schedule.repeats) == (Schedule.DAILY, -1)
    funding_record_set("wd_daily", kind="payout", amount=CR, status="paid")

    assert reconcile_funding()["flagged"] == 1
    assert reconcile_funding()["flagged"] == 0


def test_open_flags_are_a_gauge_in_metrics_by_kind(rich_alice, provider, settings):
    settings.METRICS_TOKEN = "t"
    funding_record_set("wd_a", kind="payout", amount=CR, status="paid")
    funding_record_set("wd_b", kind="payout", amount=CR, status="paid")
    funding_record_set("dep_c", kind="collect", amount=CR, status="paid")
    reconcile()
    FundingDiscrepancy.objects.filter(reference="wd_b").update(resolved_at=timezone.now())

    body = Client().get("/metrics", headers={"Authorization": "Bearer t"}).content.decode()

    assert 'agent_exchange_funding_discrepancies{kind="payout_paid_there"} 1.0' in body
    assert 'agent_exchange_funding_discrepancies{kind="collect_unmatched"} 1.0' in body
    assert 'agent_exchange_funding_discrepancies{kind="payout_paid_here"} 0.0' in body


def _staff(username: str, *perms: str) -> Client:
    user = User.objects.create_user(username, password="a long enough passphrase", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_operators_see_flags_and_only_those_allowed_resolve_them(rich_alice, provider):
    funding_record_set("wd_x", kind="payout", amount=CR, status="paid")
    reconcile()
    flag = FundingDiscrepancy.objects.get()
    url = reverse("admin:escrow_fundingdiscrepancy_changelist")
    viewer = _staff("viewer", "view_fundingdiscrepancy")
    resolver = _staff("resolver", "view_fundingdiscrepancy", "resolve_fundingdiscrepancy")

    page = viewer.get(url, {"resolved": "no"})
    assert page.status_code == 200 and "wd_x" in page.content.decode()
    assert "mark_resolved" not in page.content.decode()
    assert viewer.get(url, {"kind__exact": "payout_paid_there"}).status_code == 200
    viewer.post(url, {"action": "mark_resolved", "_selected_action": [flag.pk]})
    flag.refresh_from_db()
    assert flag.resolved_at is None
    change = reverse("admin:escrow_fundingdiscrepancy_change", args=[flag.pk])
    assert viewer.post(change, {"notes": "x"}).status_code == 403

    assert "mark_resolved" in resolver.get(url).content.decode()
    before = money()
    resolver.post(url, {"action": "mark_resolved", "_selected_action": [flag.pk]})

    flag.refresh_from_db()
    assert flag.resolved_at is not None and flag.resolved_by.username == "resolver"
    assert money() == before
    assert system_balance(Account.Kind.PAYOUTS) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reconciliation_recovery_and_a_retry_at_once_credit_a_late_collection_once(
    alice, provider, settings
):
    from django.db import connections

    from escrow.deposits import deposits_recover
    from tests.concurrency import run_threads

    provider("lost")
    with pytest.raises(DepositPending):
        deposit_create(user_id=alice.pk, amount=4 * CR, idempotency_key="d")
    funding_land(Deposit.objects.get().reference)

    def race(index: int) -> None:
        if index % 3 == 0:
            reconcile()
        elif index % 3 == 1:
            deposits_recover(before=timezone.now())
        else:
            deposit_create(user_id=alice.pk, amount=4 * CR, idempotency_key="d")

    errors = run_threads(9, race)
    connections.close_all()

    assert not errors, errors[:3]
    assert Transfer.objects.filter(kind="deposit").count() == 1
    assert wallet(alice) == 4 * CR
    assert Deposit.objects.get().status == "completed"
    assert [op[3] for op in funding_ops()] == ["paid"]
