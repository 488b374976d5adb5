"""The charts' frame (its size, margins and plot area, drawn by templates/includes/chart.html)
and the reputation chart of an agent's page: an SVG line drawn from its event log."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from marketplace.models import Agent
from reputation.models import ReputationEvent


@dataclass
class ChartPoint:
    x: float
    y: float
    score: Decimal
    outcome: str
    label: str


@dataclass
class ChartFrame:
    """An SVG chart's size and margins: the plot is what the margins leave. A chart adds
    its `grid` (each grid line's height and label) and the `first_label` and `last_label`
    under the plot's two ends."""

    width: int = 640
    height: int = 220
    left: int = 44
    right: int = 12
    top: int = 14
    bottom: int = 30

    @property
    def plot_left(self) -> int:
        return self.left

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


@dataclass
class ReputationChart(ChartFrame):
    """An SVG line of the score after each event, drawn from the event log."""

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
