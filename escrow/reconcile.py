"""The daily reconciliation: the provider's own records against our deposits and
withdrawals, matched by our key (a deposit's reference, a withdrawal's provider key).

- A collection the provider made that no one credited (the deposit is pending, or failed
  before only refusals could fail one) is credited, once: `deposit_complete` moves a deposit
  to completed at most once, whoever (recovery, a client's retry, this) gets there first.
- Everything else that disagrees is flagged for an operator as a `FundingDiscrepancy`
  (the admin lists them, `/metrics` counts the open ones by kind), and no money moves:
  a payout the provider made while we returned the money, or one we recorded paid that
  it never made, is a person's decision, and moving money again to "fix" it could only
  repeat the mistake.
- Our side is read too: a deposit credited or a withdrawal paid in the window that the
  provider's records don't show is asked about by key (its record may fall just outside
  the window) and flagged if the provider didn't do it.

A flag is written once per provider, key and kind, so running it twice, or over
overlapping windows, changes nothing more. Provider calls happen outside any transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.utils import timezone

from escrow.deposits import deposit_complete
from escrow.funding import FundingProvider, ProviderRecord, funding_provider
from escrow.payout_models import Deposit, FundingDiscrepancy, Withdrawal

log = logging.getLogger(__name__)

Kind = FundingDiscrepancy.Kind
# What the provider answers about an operation it didn't do (pending is still under way).
NOT_DONE = ("failed", "unknown")
# A day, and some: daily runs overlap, so no record falls between two of them.
DEFAULT_WINDOW = timedelta(hours=26)


def funding_reconcile(
    *, since: datetime, until: datetime, provider: str | None = None
) -> dict[str, int]:
    """Reconcile the provider's records in [since, until) with ours; counts of what it did."""
    name = provider or settings.FUNDING_PROVIDER
    source = funding_provider(name)
    counts = {"records": 0, "credited": 0, "flagged": 0, "errors": 0}
    records = source.records(since=since, until=until)
    if records is None:  # the provider keeps no records (dev): nothing to hold us against
        return counts
    counts["records"] = len(records)
    seen: set[str] = set()
    for record in records:
        seen.add(record.key)
        try:
            check = _collection if record.kind == "collect" else _payout
            outcome = check(name, record)
        except Exception:
            log.exception("could not reconcile %s %s", record.kind, record.key)
            outcome = "errors"
        if outcome:
            counts[outcome] += 1
    for outcome in _ours_unrecorded(name, source, since=since, until=until, seen=seen):
        counts[outcome] += 1
    return counts


def funding_reconcile_recent() -> dict[str, int]:
    """The daily run: the configured provider's records of the last DEFAULT_WINDOW."""
    until = timezone.now()
    return funding_reconcile(since=until - DEFAULT_WINDOW, until=until)


def discrepancies_resolve(*, ids: list[int], user_id: int | None) -> int:
    """Mark open discrepancies resolved by an operator; how many this call resolved. It
    moves no money: whatever fixed the drift was done, and noted, by a person."""
    return FundingDiscrepancy.objects.filter(pk__in=ids, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by_id=user_id
    )


def _collection(name: str, record: ProviderRecord) -> str | None:
    deposit = Deposit.objects.filter(reference=record.key).first()
    if record.status == "paid":
        if deposit is None:
            return _flag(name, Kind.COLLECT_UNMATCHED, record)
        if deposit.amount != record.amount:
            return _flag(name, Kind.AMOUNT_MISMATCH, record, deposit.status, deposit.amount)
        if deposit.status == Deposit.Status.COMPLETED:
            return None
        deposit_complete(deposit_id=deposit.pk, provider_reference=record.key)
        log.warning("deposit %s: collected by the provider, credited by reconciliation", deposit.pk)
        return "credited"
    completed = deposit is not None and deposit.status == Deposit.Status.COMPLETED
    if deposit is not None and completed and record.status in NOT_DONE:
        return _flag(name, Kind.CREDIT_UNCOLLECTED, record, deposit.status, deposit.amount)
    return None


def _payout(name: str, record: ProviderRecord) -> str | None:
    withdrawal = Withdrawal.objects.filter(provider_key=record.key).first()
    if withdrawal is None:
        return _flag(name, Kind.PAYOUT_PAID_THERE, record) if record.status == "paid" else None
    ours = (withdrawal.status, withdrawal.amount)
    if record.status == "paid":
        if withdrawal.amount != record.amount:
            return _flag(name, Kind.AMOUNT_MISMATCH, record, *ours)
        # Processing: recovery asks the provider and settles it paid, once its lease ends.
        if withdrawal.status in (Withdrawal.Status.PAID, Withdrawal.Status.PROCESSING):
            return None
        return _flag(name, Kind.PAYOUT_PAID_THERE, record, *ours)
    if withdrawal.status == Withdrawal.Status.PAID and record.status in NOT_DONE:
        return _flag(name, Kind.PAYOUT_PAID_HERE, record, *ours)
    return None


def _ours_unrecorded(
    name: str, source: FundingProvider, *, since: datetime, until: datetime, seen: set[str]
) -> list[str]:
    """Flag what we finished in the window that the provider says it didn't do."""
    credited = Deposit.objects.filter(
        provider=name,
        status=Deposit.Status.COMPLETED,
        completed_at__gte=since,
        completed_at__lt=until,
    ).values_list("reference", "amount")
    paid = Withdrawal.objects.filter(
        provider=name, status=Withdrawal.Status.PAID, resolved_at__gte=since, resolved_at__lt=until
    ).values_list("provider_key", "amount")
    ours: list[tuple[Literal["collect", "payout"], str, str, int]] = [
        *(("collect", key, Deposit.Status.COMPLETED, amount) for key, amount in credited),
        *(("payout", key, Withdrawal.Status.PAID, amount) for key, amount in paid),
    ]
    outcomes: list[str] = []
    for op, key, our_status, amount in ours:
        if key in seen:
            continue
        try:
            status = source.status(key)
        except Exception:
            log.exception("could not ask the provider about %s", key)
            outcomes.append("errors")
            continue
        if status not in NOT_DONE:
            continue
        kind = Kind.CREDIT_UNCOLLECTED if op == "collect" else Kind.PAYOUT_PAID_HERE
        # No record in the window to take the provider's amount from: it stays unknown.
        record = ProviderRecord(key=key, kind=op, amount=0, status=status)
        if _flag(name, kind, record, our_status, amount, record_amount=False):
            outcomes.append("flagged")
    return outcomes


def _flag(
    name: str,
    kind: str,
    record: ProviderRecord,
    our_status: str = FundingDiscrepancy.MISSING,
    our_amount: int | None = None,
    *,
    record_amount: bool = True,
) -> str | None:
    """Record the drift once; "flagged" when this call recorded it."""
    _, created = FundingDiscrepancy.objects.get_or_create(
        provider=name,
        reference=record.key,
        kind=kind,
        defaults={
            "our_status": our_status,
            "provider_status": record.status,
            "our_amount": our_amount,
            "provider_amount": record.amount if record_amount else None,
        },
    )
    if not created:
        return None
    log.error(
        "funding discrepancy %s: %s is %s here and %s at the provider",
        kind,
        record.key,
        our_status,
        record.status,
    )
    return "flagged"
