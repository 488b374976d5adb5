"""Recompute the ledger from its transfers and check every invariant of the money rules."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum

from escrow.earnings_audit import earnings_problems
from escrow.funding_audit import funding_problems
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.system_accounts import system_balance

Kind = Transfer.Kind
EXPECTED_LEGS: dict[str, set[str]] = {
    Escrow.Status.PENDING: set(),
    Escrow.Status.CANCELLED: set(),
    Escrow.Status.COMPLETED: set(),
    Escrow.Status.FUNDED: {Kind.ESCROW_HOLD},
    Escrow.Status.REFUNDED: {Kind.ESCROW_HOLD, Kind.ESCROW_REFUND},
    Escrow.Status.RELEASED: {
        Kind.ESCROW_HOLD,
        Kind.ESCROW_PAYOUT,
        Kind.ESCROW_FEE,
        Kind.ESCROW_REFUND,
    },
}

HOLDING_STATUSES = (Escrow.Status.FUNDED, Escrow.Status.RELEASED, Escrow.Status.REFUNDED)


@dataclass
class LedgerReport:
    accounts: int = 0
    transfers: int = 0
    escrows: int = 0
    total_balance: int = 0
    held_in_escrow: int = 0
    in_channels: int = 0
    channels: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def ledger_audit() -> LedgerReport:
    """Audit the ledger as of one instant, however busy the system is.

    Under PostgreSQL's default READ COMMITTED each query sees the commits made before it
    started, so money moving between two of the audit's queries would show as drift. The
    audit therefore runs in one REPEATABLE READ (and read-only) transaction: every query
    reads the same snapshot. Called inside a caller's transaction, it reads that one's.
    """
    snapshot = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if snapshot:
            with connection.cursor() as cursor:
                # Must be the transaction's first statement.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _audit()


def _audit() -> LedgerReport:
    report = LedgerReport()
    flows: dict[int, int] = defaultdict(int)
    for row in Transfer.objects.values("debit_account").annotate(total=Sum("amount")):
        flows[row["debit_account"]] -= row["total"]
    for credit in Transfer.objects.values("credit_account").annotate(total=Sum("amount")):
        flows[credit["credit_account"]] += credit["total"]
    report.transfers = Transfer.objects.count()
    bad = Transfer.objects.filter(amount__lte=0).count()
    if bad:
        report.violations.append(f"{bad} transfers with a non-positive amount")

    escrow_balance = 0  # the escrow account's shards, summed
    for account in Account.objects.all().only("pk", "kind", "balance"):
        report.accounts += 1
        report.total_balance += account.balance
        if account.balance != flows.get(account.pk, 0):
            report.violations.append(
                f"account {account.pk} ({account.kind}) holds {account.balance} µCR "
                f"but its transfers add up to {flows.get(account.pk, 0)} µCR"
            )
        if account.kind != Account.Kind.EXTERNAL and account.balance < 0:
            report.violations.append(f"account {account.pk} ({account.kind}) is negative")
        if account.kind == Account.Kind.ESCROW:
            escrow_balance += account.balance
    if report.total_balance != 0:
        report.violations.append(f"the balances add up to {report.total_balance} µCR, not 0")

    funded = Escrow.objects.filter(status=Escrow.Status.FUNDED).aggregate(s=Sum("amount"))["s"] or 0
    report.held_in_escrow = funded
    if escrow_balance != funded:
        report.violations.append(
            f"the escrow account holds {escrow_balance} µCR but funded escrows total {funded} µCR"
        )
    channels_balance = system_balance(Account.Kind.CHANNELS)
    unsettled = PaymentChannel.objects.exclude(status=PaymentChannel.Status.SETTLED)
    # What left a deposit for an evaluator's run (drawn) is in that run's escrow now.
    held = unsettled.aggregate(s=Sum(F("deposit") - F("drawn")))["s"] or 0
    report.in_channels = held
    if channels_balance != held:
        report.violations.append(
            f"the channels account holds {channels_balance} µCR but unsettled channels "
            f"hold {held} µCR"
        )
    report.violations.extend(_platform_fees())
    report.violations.extend(_escrow_legs(report))
    report.violations.extend(_channels(report))
    report.violations.extend(earnings_problems())
    report.violations.extend(funding_problems())
    return report


def _platform_fees() -> list[str]:
    """Fees charged (an escrow's fee leg, a settled channel's) less fees refunded (by a
    dispute, or an evaluator's rejection) = what the platform fee shards hold. Each
    account's balance matching its own lines can't tell a fee paid to the wrong account, or
    a line of another kind paid to the platform: this can."""
    totals = Transfer.objects.aggregate(
        charged=Sum("amount", filter=Q(kind__in=(Kind.ESCROW_FEE, Kind.CHANNEL_FEE))),
        refunded=Sum(
            "amount", filter=Q(kind__in=(Kind.DISPUTE_FEE_REFUND, Kind.EVALUATION_FEE_REFUND))
        ),
    )
    charged, refunded = totals["charged"] or 0, totals["refunded"] or 0
    held = system_balance(Account.Kind.PLATFORM_FEES)
    if held == charged - refunded:
        return []
    return [
        f"the platform fee accounts hold {held} µCR but fees charged ({charged} µCR) − fees "
        f"refunded ({refunded} µCR) = {charged - refunded} µCR"
    ]


def _channels(report: LedgerReport) -> list[str]:
    """Each channel's counters match its tasks' escrows, and its money matches its state."""
    problems: list[str] = []
    by_channel: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in (
        Escrow.objects.filter(channel__isnull=False)
        .values("channel", "status")
        .annotate(n=Count("id"), amount=Sum("amount"), cost=Sum("cost"), fee=Sum("fee"))
    ):
        tally = by_channel[row["channel"]]
        if row["status"] == Escrow.Status.PENDING:
            tally["in_flight"] += row["n"]
            tally["reserved"] += row["amount"] or 0
        elif row["status"] == Escrow.Status.COMPLETED:
            tally["redeemed"] += row["cost"] or 0
            tally["fees"] += row["fee"] or 0
    # A task whose evaluator has not given its verdict is still in flight on its channel.
    evaluating = Escrow.objects.filter(
        channel__isnull=False, status=Escrow.Status.COMPLETED, task__evaluation__status="running"
    )
    for channel_id, n in (
        evaluating.values("channel").annotate(n=Count("id")).values_list("channel", "n")
    ):
        by_channel[channel_id]["in_flight"] += n
    legs: dict[Any, dict[str, int]] = defaultdict(dict)
    for leg in Transfer.objects.filter(channel__isnull=False).values("channel", "kind", "amount"):
        legs[leg["channel"]][leg["kind"]] = leg["amount"]
    # What was drawn for evaluators: the holds of their runs' escrows from the channels account.
    drawn = dict(
        Transfer.objects.filter(kind=Kind.ESCROW_HOLD, debit_account__kind=Account.Kind.CHANNELS)
        .values_list("task__evaluates__escrow__channel")
        .annotate(total=Sum("amount"))
    )
    for channel in PaymentChannel.objects.all():
        report.channels += 1
        tally = by_channel[channel.pk]
        found = (channel.redeemed, channel.fees, channel.reserved, channel.in_flight)
        expected = (tally["redeemed"], tally["fees"], tally["reserved"], tally["in_flight"])
        if found != expected:
            problems.append(
                f"channel {channel.pk} (redeemed, fees, reserved, in flight) = {found}; "
                f"its tasks give {expected}"
            )
        got = legs.get(channel.pk, {})
        if channel.drawn != drawn.get(channel.pk, 0):
            problems.append(
                f"channel {channel.pk} drew {channel.drawn} µCR for evaluators; its runs' "
                f"escrows hold {drawn.get(channel.pk, 0)} µCR from it"
            )
        want = {Kind.CHANNEL_DEPOSIT: channel.deposit}
        if channel.status == PaymentChannel.Status.SETTLED:
            want |= {
                Kind.CHANNEL_PAYOUT: channel.redeemed - channel.fees,
                Kind.CHANNEL_FEE: channel.fees,
                Kind.CHANNEL_REFUND: channel.deposit - channel.redeemed - channel.drawn,
            }
        if got != {kind: amount for kind, amount in want.items() if amount}:
            problems.append(f"channel {channel.pk} ({channel.status}) has transfers {got}")
    return problems


def _escrow_legs(report: LedgerReport) -> list[str]:
    """Each escrow's transfers must match its state, leg by leg, to the µCR."""
    problems: list[str] = []
    legs: dict[int, dict[str, int]] = defaultdict(dict)
    for row in (
        Transfer.objects.filter(escrow__isnull=False)
        .values("escrow", "kind")
        .annotate(total=Sum("amount"), n=Count("id"))
    ):
        if row["n"] != 1:
            problems.append(f"escrow {row['escrow']} has {row['n']} {row['kind']} transfers")
        legs[row["escrow"]][row["kind"]] = row["total"]
    for escrow in Escrow.objects.all().only("pk", "status", "amount", "cost", "fee", "refund"):
        report.escrows += 1
        got = legs.get(escrow.pk, {})
        allowed = EXPECTED_LEGS[escrow.status]
        if not set(got) <= allowed:
            problems.append(f"escrow {escrow.pk} ({escrow.status}) has transfers {sorted(got)}")
            continue
        held = got.get(Kind.ESCROW_HOLD)
        if escrow.status in HOLDING_STATUSES and held != escrow.amount:
            problems.append(f"escrow {escrow.pk} held {held} of {escrow.amount}")
        if escrow.status in (Escrow.Status.RELEASED, Escrow.Status.REFUNDED):
            cost, fee, refund = escrow.cost or 0, escrow.fee or 0, escrow.refund or 0
            paid = (
                got.get(Kind.ESCROW_PAYOUT, 0),
                got.get(Kind.ESCROW_FEE, 0),
                got.get(Kind.ESCROW_REFUND, 0),
            )
            if paid != (cost - fee, fee, refund) or cost + refund != escrow.amount:
                problems.append(
                    f"escrow {escrow.pk} paid (payout, fee, refund) = {paid}; "
                    f"expected {(cost - fee, fee, refund)} of {escrow.amount}"
                )
    return problems
