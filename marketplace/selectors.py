"""Reads for the browser pages. Who may see what is decided here, in one place.

Agents are a catalogue every signed-in user can read, and only the owner manages one;
tasks, wallets and ledger lines belong to one user, and anybody else gets the same 404
as for something that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.http import Http404

from escrow.models import Account, Escrow, PaymentChannel, Transfer, Voucher
from marketplace.models import Agent, Task
from reputation.models import INITIAL_SCORE, AgentReputation, ReputationEvent

Kind = Transfer.Kind
ACTIVE_STATUSES = (Task.Status.PENDING_FUNDING, Task.Status.QUEUED, Task.Status.RUNNING)


# --- wallet ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletSummary:
    balance: int
    held_in_escrow: int
    in_channels: int

    @property
    def total(self) -> int:
        return self.balance + self.held_in_escrow + self.in_channels


def wallet_of(user: Any) -> Account | None:
    return Account.objects.filter(kind=Account.Kind.WALLET, user=user).first()


def wallet_summary(user: Any) -> WalletSummary:
    account = wallet_of(user)
    if account is None:
        return WalletSummary(0, 0, 0)
    held = Escrow.objects.filter(payer=account, status=Escrow.Status.FUNDED).aggregate(
        held=Sum("amount")
    )["held"]
    return WalletSummary(account.balance, held or 0, channels_holding(user))


def channels_holding(user: Any) -> int:
    """µCR deposited in the user's channels that have not settled yet."""
    held = (
        PaymentChannel.objects.filter(requester=user)
        .exclude(status=PaymentChannel.Status.SETTLED)
        .aggregate(held=Sum("deposit"))["held"]
    )
    return held or 0


@dataclass(frozen=True)
class LedgerLine:
    transfer: Transfer
    amount: int  # signed: + into the wallet, − out of it
    balance_after: int

    @property
    def incoming(self) -> bool:
        return self.amount > 0


def _signed(wallet_id: int) -> Case:
    return Case(
        When(credit_account_id=wallet_id, then=F("amount")),
        default=-F("amount"),
        output_field=BigIntegerField(),
    )


def ledger_of(user: Any) -> QuerySet[Transfer]:
    """The user's ledger lines, newest first."""
    account = wallet_of(user)
    wallet_id = account.pk if account is not None else -1
    return (
        Transfer.objects.filter(Q(debit_account_id=wallet_id) | Q(credit_account_id=wallet_id))
        .select_related("task__agent", "channel__agent")
        .annotate(signed=_signed(wallet_id))
        .order_by("-id")
    )


def ledger_lines(user: Any, transfers: Iterable[Transfer]) -> list[LedgerLine]:
    """Ledger lines (newest first) with the wallet balance right after each one.

    A wallet starts at zero and changes only through its transfers, so the balance after
    a line is the sum of every line up to it: one aggregate for what came before the page.
    """
    page = list(transfers)
    if not page:
        return []
    account = wallet_of(user)
    assert account is not None
    oldest = page[-1].pk
    before = (
        Transfer.objects.filter(
            Q(debit_account_id=account.pk) | Q(credit_account_id=account.pk), pk__lt=oldest
        )
        .annotate(signed=_signed(account.pk))
        .aggregate(total=Coalesce(Sum("signed"), Value(0)))["total"]
    )
    lines: list[LedgerLine] = []
    running = before
    for transfer in reversed(page):
        running += transfer.signed  # type: ignore[attr-defined]
        lines.append(LedgerLine(transfer, transfer.signed, running))  # type: ignore[attr-defined]
    lines.reverse()
    return lines


def ledger_export(user: Any) -> Iterator[LedgerLine]:
    """Every ledger line, oldest first, with running balances (for the CSV export)."""
    running = 0
    for transfer in ledger_of(user).order_by("id").iterator(chunk_size=500):
        running += transfer.signed  # type: ignore[attr-defined]
        yield LedgerLine(transfer, transfer.signed, running)  # type: ignore[attr-defined]


# --- tasks -----------------------------------------------------------------------------


def tasks_of(user: Any) -> QuerySet[Task]:
    return (
        Task.objects.filter(requester=user)
        .select_related("agent")
        .defer("stdout", "stderr", "input")
        .order_by("-created_at")
    )


def task_of(user: Any, task_id: Any) -> Task:
    """The user's own task; another user's is as absent as one that never existed."""
    task = (
        Task.objects.filter(requester=user, pk=task_id)
        .select_related("agent", "binary", "receipt", "escrow")
        .first()
    )
    if task is None:
        raise Http404("No such task.")
    return task


def has_active_tasks(tasks: Iterable[Task]) -> bool:
    return any(task.status in ACTIVE_STATUSES for task in tasks)


# --- agents ----------------------------------------------------------------------------


def agents_annotated() -> QuerySet[Agent]:
    return Agent.objects.select_related("owner", "current_binary").annotate(
        score=Coalesce(F("reputation__score"), Value(INITIAL_SCORE))
    )


def agent_catalogue(
    *, query: str = "", order_by: tuple[str, ...] = ("-score", "slug"), owner: Any = None
) -> QuerySet[Agent]:
    listing = agents_annotated()
    if owner is not None:
        listing = listing.filter(owner=owner)
    for word in query.split():
        listing = listing.filter(
            Q(name__icontains=word)
            | Q(slug__icontains=word)
            | Q(description__icontains=word)
            | Q(tags__icontains=word)
            | Q(owner__username__iexact=word)
        )
    return listing.order_by(*order_by)


def agent_by_slug(slug: str) -> Agent:
    agent = agents_annotated().filter(slug=slug).first()
    if agent is None:
        raise Http404("No such agent.")
    return agent


def agent_owned_by(user: Any, slug: str) -> Agent:
    """The agent, if `user` owns it: others get a 404, as if it were not theirs to know."""
    agent = agent_by_slug(slug)
    if agent.owner_id != user.pk:
        raise Http404("No such agent.")
    return agent


def _earnings(agent_filter: str, agent: Any) -> Q:
    """What an agent's owner was paid: per task from escrow, per channel at settlement."""
    return Q(kind=Kind.ESCROW_PAYOUT, **{f"task__{agent_filter}": agent}) | Q(
        kind=Kind.CHANNEL_PAYOUT, **{f"channel__{agent_filter}": agent}
    )


def _sum(transfers: QuerySet[Transfer]) -> Subquery:
    # SUM as a plain function: one row for the whole filtered set, no GROUP BY.
    total = Func(F("amount"), function="SUM", output_field=BigIntegerField())
    return Subquery(transfers.order_by().annotate(total=total).values("total")[:1])


def agent_earnings(agent: Agent) -> int:
    total = Transfer.objects.filter(_earnings("agent", agent)).aggregate(total=Sum("amount"))
    return total["total"] or 0


def agents_of(user: Any) -> QuerySet[Agent]:
    """The user's own agents, with their earnings and number of tasks."""
    return (
        agents_annotated()
        .filter(owner=user)
        .annotate(
            earned=Coalesce(
                _sum(Transfer.objects.filter(_earnings("agent", OuterRef("pk")))),
                Value(0),
                output_field=BigIntegerField(),
            ),
            runs=Count("tasks"),
        )
        .order_by("name")
    )


def owner_earnings(user: Any) -> int:
    total = Transfer.objects.filter(_earnings("agent__owner", user)).aggregate(total=Sum("amount"))
    return total["total"] or 0


@dataclass(frozen=True)
class AgentStats:
    successes: int
    failures: int
    neutral: int
    tasks: int

    @property
    def scored(self) -> int:
        return self.successes + self.failures

    @property
    def success_rate(self) -> Decimal | None:
        """Successes among the runs the agent is answerable for (not platform faults)."""
        if not self.scored:
            return None
        return Decimal(100 * self.successes) / Decimal(self.scored)


def agent_stats(agent: Agent) -> AgentStats:
    standing = AgentReputation.objects.filter(agent=agent).first()
    return AgentStats(
        successes=standing.successes if standing else 0,
        failures=standing.failures if standing else 0,
        neutral=standing.neutral if standing else 0,
        tasks=Task.objects.filter(agent=agent).count(),
    )


def agent_recent_tasks(agent: Agent, *, limit: int = 10) -> list[Task]:
    """The agent's latest runs, without anybody's input or output."""
    return list(
        Task.objects.filter(agent=agent)
        .only(
            "id",
            "requester_id",
            "status",
            "failure_reason",
            "cost",
            "fuel_used",
            "elapsed_ms",
            "created_at",
        )
        .order_by("-created_at")[:limit]
    )


# --- the reputation chart ------------------------------------------------------------------


@dataclass
class ChartPoint:
    x: float
    y: float
    score: Decimal
    outcome: str
    label: str


@dataclass
class ReputationChart:
    """An SVG line of the score after each event, drawn from the event log."""

    width: int = 640
    height: int = 220
    left: int = 44
    right: int = 12
    top: int = 14
    bottom: int = 30
    points: list[ChartPoint] = field(default_factory=list)
    grid: list[tuple[float, str]] = field(default_factory=list)
    first_label: str = ""
    last_label: str = ""
    events: int = 0

    @property
    def line(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def area(self) -> str:
        if not self.points:
            return ""
        base = self.height - self.bottom
        return (
            f"M{self.points[0].x:.1f},{base} "
            + " ".join(f"L{p.x:.1f},{p.y:.1f}" for p in self.points)
            + f" L{self.points[-1].x:.1f},{base} Z"
        )

    @property
    def plot_left(self) -> int:
        return self.left

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


CHART_EVENTS = 200


def reputation_chart(agent: Agent) -> ReputationChart:
    chart = ReputationChart()
    events = list(
        ReputationEvent.objects.filter(agent=agent)
        .order_by("-id")
        .only("score_before", "score_after", "outcome", "reason", "created_at")[:CHART_EVENTS]
    )
    events.reverse()
    chart.events = len(events)
    if not events:
        return chart
    scores = [events[0].score_before] + [event.score_after for event in events]
    low = max(Decimal(0), (min(scores) - 5) // 10 * 10)
    high = min(Decimal(100), -((-(max(scores) + 5)) // 10) * 10)
    if high - low < 20:
        high = min(Decimal(100), low + 20)
        low = max(Decimal(0), high - 20)
    span_x = chart.plot_right - chart.plot_left
    span_y = chart.plot_bottom - chart.top

    def y_of(value: Decimal) -> float:
        return chart.plot_bottom - float((value - low) / (high - low)) * span_y

    steps = len(scores) - 1
    for index, value in enumerate(scores):
        x = chart.plot_left + span_x * index / steps
        if index == 0:
            outcome, label = "start", f"start: {value:.1f}"
        else:
            event = events[index - 1]
            outcome = event.outcome
            what = event.reason.replace("_", " ") if event.reason else event.outcome
            label = f"{event.created_at:%Y-%m-%d %H:%M} · {what} · {value:.1f}"
        chart.points.append(ChartPoint(x, y_of(value), value, outcome, label))
    ticks = 4
    for step in range(ticks + 1):
        value = low + (high - low) * step / ticks
        chart.grid.append((y_of(value), f"{value:.0f}"))
    chart.first_label = f"{events[0].created_at:%b %-d, %H:%M}"
    last = f"{events[-1].created_at:%b %-d, %H:%M}"
    chart.last_label = "" if last == chart.first_label else last
    return chart


# --- payment channels -----------------------------------------------------------------------


def channels_paid_by(user: Any) -> QuerySet[PaymentChannel]:
    return (
        PaymentChannel.objects.filter(requester=user)
        .select_related("agent")
        .order_by("-created_at")
    )


def channels_to_agents_of(user: Any) -> QuerySet[PaymentChannel]:
    return (
        PaymentChannel.objects.filter(agent__owner=user)
        .exclude(requester=user)
        .select_related("agent", "requester")
        .order_by("-created_at")
    )


def channel_for(user: Any, channel_id: Any) -> PaymentChannel:
    """A channel the user pays from or whose agent they own; anybody else gets a 404."""
    channel = (
        PaymentChannel.objects.filter(Q(requester=user) | Q(agent__owner=user), pk=channel_id)
        .select_related("agent", "requester")
        .first()
    )
    if channel is None:
        raise Http404("No such channel.")
    return channel


def open_channels_of(user: Any) -> QuerySet[PaymentChannel]:
    """The user's channels that can pay for a new task."""
    from django.utils import timezone

    return channels_paid_by(user).filter(
        status=PaymentChannel.Status.OPEN, expires_at__gt=timezone.now()
    )


def channel_vouchers(channel: PaymentChannel) -> list[Voucher]:
    return list(
        Voucher.objects.filter(channel=channel)
        .select_related("task")
        .defer("task__stdout", "task__stderr", "task__input")
        .order_by("-nonce")
    )


def channel_available(channel: PaymentChannel) -> int:
    """What a new task on the channel can still budget: not redeemed and not in flight."""
    return channel.deposit - channel.redeemed - channel.reserved
