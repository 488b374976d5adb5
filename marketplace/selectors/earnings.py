"""Reads of an owner's held earnings: the pending list of the wallet page and the earnings
chart of the dashboard (released vs still pending, a bar a day)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from escrow.models import Earning
from marketplace.selectors.charts import ChartFrame
from marketplace.selectors.wallet import wallet_of

PENDING_SHOWN = 50
CHART_DAYS = 14


def pending_earnings_of(user: Any) -> QuerySet[Earning]:
    """The user's earnings not yet in the wallet (held or frozen by a dispute), the next
    to be released first, with their task and agent."""
    account = wallet_of(user)
    return (
        Earning.objects.filter(wallet=account, status__in=Earning.UNRELEASED)
        .select_related("task__agent")
        .only(
            "amount",
            "status",
            "release_at",
            "task__id",
            "task__requester_id",
            "task__agent__name",
            "task__agent__slug",
        )
        .order_by("release_at", "pk")
    )


@dataclass
class EarningsBar:
    day: date
    released: int
    pending: int
    x: float = 0
    width: float = 0
    released_y: float = 0
    released_height: float = 0
    pending_y: float = 0
    pending_height: float = 0

    @property
    def label(self) -> str:
        return f"{self.day:%b %-d}"


@dataclass
class EarningsChart(ChartFrame):
    """Stacked bars, one a day: the day's earnings already released to the wallet below,
    those still held (or frozen by a dispute) above. Refunded earnings are not earnings."""

    left: int = 64  # room for amounts in CR
    bars: list[EarningsBar] = field(default_factory=list)
    grid: list[tuple[float, int]] = field(default_factory=list)
    released: int = 0
    pending: int = 0

    @property
    def first_label(self) -> str:
        return self.bars[0].label if self.bars else ""

    @property
    def last_label(self) -> str:
        return self.bars[-1].label if self.bars else ""

    @property
    def empty(self) -> bool:
        return not (self.released or self.pending)


def _nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ µCR at or above `value`: a round top for the axis."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def earnings_chart(
    user: Any, *, days: int = CHART_DAYS, today: date | None = None
) -> EarningsChart:
    chart = EarningsChart()
    account = wallet_of(user)
    if account is None:
        return chart
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    rows = (
        Earning.objects.filter(wallet=account, created_at__date__gte=first)
        .exclude(status=Earning.Status.REFUNDED)
        .annotate(day=TruncDate("created_at"))
        .values("day", "status")
        .annotate(total=Sum("amount"))
    )
    days_shown = [first + timedelta(days=n) for n in range(days)]
    by_day = {day: EarningsBar(day, 0, 0) for day in days_shown}
    for row in rows:
        bar = by_day.get(row["day"])
        if bar is None:
            continue
        if row["status"] == Earning.Status.RELEASED:
            bar.released += row["total"]
        else:
            bar.pending += row["total"]
    chart.bars = list(by_day.values())
    chart.released = sum(bar.released for bar in chart.bars)
    chart.pending = sum(bar.pending for bar in chart.bars)
    top = _nice_top(max((bar.released + bar.pending for bar in chart.bars), default=0) or 1)
    span_y = chart.plot_bottom - chart.top
    slot = (chart.plot_right - chart.plot_left) / days

    def height_of(amount: int) -> float:
        return span_y * amount / top

    for index, bar in enumerate(chart.bars):
        bar.x = chart.plot_left + slot * index + slot * 0.15
        bar.width = slot * 0.7
        bar.released_height = height_of(bar.released)
        bar.released_y = chart.plot_bottom - bar.released_height
        bar.pending_height = height_of(bar.pending)
        bar.pending_y = bar.released_y - bar.pending_height
    ticks = 4
    for step in range(ticks + 1):
        amount = top * step // ticks
        chart.grid.append((chart.plot_bottom - height_of(amount), amount))
    return chart
