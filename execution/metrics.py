"""`/metrics` for Prometheus (SPEC §17): the exchange's state, read from the database when scraped.

Every value comes from the shared database (and the broker), not from counters in this
process: any web process on any host answers the same, so scraping one of them is enough and
nothing needs adding up across processes or hosts. A scrape costs a handful of grouped
queries, each bounded by an index:

- the open tasks (pending funding, queued, running) by status, with the status index;
- the tasks that finished in the last METRICS_WINDOW_SECONDS and were submitted within twice
  that (the created_at index bounds the rows read), by status and failure reason, and their
  latency histograms. Counting every finished task ever would read the whole table at each
  scrape (a parallel sequential scan: 0.43 s at a million tasks), so finished work is
  reported over the window. The histograms are *gauge* histograms, the distribution over
  that window: apply `histogram_quantile()` to the buckets as they are, without `rate()`;
- the broker's waiting messages, withdrawals and webhook deliveries by status (their status
  indexes), recovery's counts (one row per action), and each host's freshest heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from escrow.payout_models import FundingDiscrepancy, Withdrawal
from execution.health import broker_depth, metrics_token_given
from execution.heartbeat import cluster_states
from execution.models import RecoveryCount
from marketplace.exceptions import envelope
from marketplace.models import Task
from marketplace.webhooks.models import WebhookDelivery

log = logging.getLogger(__name__)
PREFIX = "agent_exchange"
# Upper bounds in seconds: from an instant settlement to a task that waited minutes.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The stages a settled task's latency is measured over: submission → settled, and the
# worker's claim → settled (run, output checks and the settlement transaction).
STAGES = {"submitted": "created_at", "claimed": "started_at"}
RECOVERY_ACTIONS = ("requeued", "resent", "failed", "errors")
OPEN = [Task.Status.PENDING_FUNDING, Task.Status.QUEUED, Task.Status.RUNNING]


def recovery_record(counts: dict[str, int]) -> None:
    """Add one recovery run's counts to the totals; never fails the run that did the work."""
    now = timezone.now()
    try:
        for action, number in counts.items():
            if number <= 0:
                continue
            rows = RecoveryCount.objects.filter(action=action)
            if not rows.update(count=F("count") + number, updated_at=now):
                RecoveryCount.objects.bulk_create(
                    [RecoveryCount(action=action)], ignore_conflicts=True
                )
                rows.update(count=F("count") + number, updated_at=now)
    except Exception:  # the counts are for monitoring; recovery itself has already happened
        log.warning("recovery counts not recorded: %s", counts, exc_info=True)


def funding_discrepancies() -> Metric:
    """Open funding discrepancies by kind: what the daily reconciliation flagged and no
    operator has resolved yet (one grouped query on the partial index of open ones)."""
    found = dict(
        FundingDiscrepancy.objects.filter(resolved_at__isnull=True)
        .order_by()
        .values_list("kind")
        .annotate(n=Count("pk"))
    )
    family = GaugeMetricFamily(
        f"{PREFIX}_funding_discrepancies",
        "Open differences between the funding provider's records and ours, by kind "
        "(reconcile_funding; resolved in the admin). Any value above 0 needs an operator.",
        labels=["kind"],
    )
    for kind in FundingDiscrepancy.Kind.values:
        family.add_metric([kind], found.get(kind, 0))
    return family


class ExchangeCollector(Collector):
    """Reads the exchange's state when Prometheus scrapes (a custom collector)."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from self.tasks(now)
        yield from self.finished(now)
        yield self.recovery()
        yield self.by_status(
            "withdrawals", "Withdrawals by status.", Withdrawal, Withdrawal.Status.values
        )
        yield funding_discrepancies()
        yield self.by_status(
            "webhook_deliveries",
            "Webhook deliveries by status (failed: every attempt failed).",
            WebhookDelivery,
            WebhookDelivery.Status.values,
        )
        yield from self.workers(now)

    def tasks(self, now: Any) -> Iterator[Metric]:
        """The open tasks now (the status index), and the queue they and the broker make."""
        found = {
            status: (number, oldest)
            for status, number, oldest in Task.objects.filter(status__in=OPEN)
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"), oldest=Min("queued_at"))
        }
        family = GaugeMetricFamily(
            f"{PREFIX}_tasks",
            "Open tasks by status, now (finished ones: agent_exchange_tasks_finished).",
            labels=["status"],
        )
        for status in OPEN:
            family.add_metric([status], found.get(status, (0, None))[0])
        yield family
        queued, oldest = found.get(Task.Status.QUEUED, (0, None))
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Work waiting: queued tasks in the task table (queue=tasks), and messages the "
            "broker holds for the task clusters (queue=broker_tasks) and for the service "
            "clusters (queue=broker_service; both absent when the broker fails).",
            labels=["queue"],
        )
        depth.add_metric(["tasks"], queued)
        broker_up = 1
        try:
            for role, waiting in broker_depth().items():
                depth.add_metric([f"broker_{role}"], waiting)
        except Exception:
            log.warning("broker queue size unavailable for /metrics", exc_info=True)
            broker_up = 0
        yield depth
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_up", "1 when the broker answered this scrape.", value=broker_up
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_queued_task_age_seconds",
            "How long the longest-waiting queued task has waited for a worker since it was "
            "queued (or requeued after a lost worker); 0 when none.",
            value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        )

    def finished(self, now: Any) -> Iterator[Metric]:
        """The tasks finished in the window, by status and reason, and how long they took:
        one grouped query over the rows the created_at index bounds."""
        window = timedelta(seconds=settings.METRICS_WINDOW_SECONDS)
        ran = Q(started_at__isnull=False)
        aggregates: dict[str, Any] = {"n": Count("pk")}
        for stage, start in STAGES.items():
            took = ExpressionWrapper(F("finished_at") - F(start), output_field=DurationField())
            aggregates[f"{stage}_sum"] = Sum(took, filter=ran)
            aggregates[f"{stage}_count"] = Count("pk", filter=ran)
            for i, bound in enumerate(BUCKETS):
                cut = ran & Q(finished_at__lte=F(start) + timedelta(seconds=bound))
                aggregates[f"{stage}_{i}"] = Count("pk", filter=cut)
        groups: list[dict[str, Any]] = [
            dict(group)
            for group in Task.objects.filter(
                created_at__gte=now - 2 * window,
                finished_at__gte=now - window,
                status__in=Task.FINAL_STATUSES,
            )
            .order_by()
            .values("status", "failure_reason")
            .annotate(**aggregates)
        ]
        family = GaugeMetricFamily(
            f"{PREFIX}_tasks_finished",
            "Tasks that finished in the last METRICS_WINDOW_SECONDS (submitted within twice "
            "that), by final status and, for failed ones, failure reason.",
            labels=["status", "reason"],
        )
        counts = {(g["status"], g["failure_reason"]): g["n"] for g in groups}
        for status in Task.FINAL_STATUSES:
            reasons = Task.FailureReason.values if status == Task.Status.FAILED else [""]
            for reason in reasons:
                family.add_metric([status, reason], counts.pop((status, reason), 0))
        for (other, reason), number in sorted(counts.items()):  # anything unforeseen
            family.add_metric([other, reason], number)
        yield family

        settled = [g for g in groups if g["status"] != Task.Status.CANCELLED]
        latency = GaugeHistogramMetricFamily(
            f"{PREFIX}_settlement_latency_seconds",
            "Tasks settled (succeeded or failed) in the last METRICS_WINDOW_SECONDS, by the "
            "time from submission (stage=submitted) or from the worker's claim "
            "(stage=claimed) to the settlement; tasks submitted over twice the window ago "
            "are left out.",
            labels=["stage"],
        )
        for stage in STAGES:
            buckets = [
                (_le(bound), sum(g[f"{stage}_{i}"] for g in settled))
                for i, bound in enumerate(BUCKETS)
            ]
            buckets.append(("+Inf", sum(g[f"{stage}_count"] for g in settled)))
            total = sum((g[f"{stage}_sum"] or timedelta(0) for g in settled), start=timedelta(0))
            latency.add_metric([stage], buckets, total.total_seconds())
        yield latency
        yield GaugeMetricFamily(
            f"{PREFIX}_metrics_window_seconds",
            "The window of the finished-task counts and the latency histogram "
            "(METRICS_WINDOW_SECONDS).",
            value=window.total_seconds(),
        )

    def recovery(self) -> Metric:
        family = CounterMetricFamily(
            f"{PREFIX}_recovery",
            "What recovery did: tasks whose lost worker's lease expired, requeued "
            "(requeued) or failed and refunded after MAX_ATTEMPTS (failed); queued tasks "
            "whose message was lost or late, re-sent to the broker (resent); tasks it "
            "could not move on (errors).",
            labels=["action"],
        )
        counts = dict(RecoveryCount.objects.values_list("action", "count"))
        for action in RECOVERY_ACTIONS:
            family.add_metric([action], counts.pop(action, 0))
        for action, number in sorted(counts.items()):
            family.add_metric([action], number)
        return family

    def by_status(self, name: str, doc: str, model: Any, statuses: list[str]) -> Metric:
        family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["status"])
        counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
        for status in statuses:
            family.add_metric([status], counts.get(status, 0))
        return family

    def workers(self, now: Any) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            f"{PREFIX}_worker_heartbeat_age_seconds",
            "Seconds since a worker of each host last reported (its freshest cluster).",
            labels=["host"],
        )
        live = GaugeMetricFamily(
            f"{PREFIX}_worker_clusters",
            "Clusters on each host heard from within WORKER_STALE_SECONDS (state=live) or "
            "not (state=stale; rows are kept a day, and a cluster its supervisor stopped "
            "counts as stale).",
            labels=["host", "state"],
        )
        stalled = GaugeMetricFamily(
            f"{PREFIX}_worker_stalled",
            "1 when a live cluster of the host has had work waiting, and started nothing, for "
            "over WORKER_STALL_SECONDS (its supervisor restarts it); 0 otherwise.",
            labels=["host"],
        )
        hosts: dict[str, list[Any]] = {}
        for state in cluster_states(now):
            hosts.setdefault(state.row.host, []).append(state)
        for host, states in sorted(hosts.items()):
            age.add_metric([host], min(state.age_seconds for state in states))
            alive = sum(state.live for state in states)
            live.add_metric([host, "live"], alive)
            live.add_metric([host, "stale"], len(states) - alive)
            stalled.add_metric([host], int(any(s.live and s.stalled for s in states)))
        yield age
        yield live
        yield stalled


def _le(bound: float) -> str:
    return str(float(bound))


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ExchangeCollector())


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. With METRICS_TOKEN set, only for `Authorization: Bearer <it>`;
    without one, open while DEBUG is on and refused (403) otherwise."""
    if settings.METRICS_TOKEN:
        if not metrics_token_given(request):
            response = JsonResponse(
                envelope("metrics_token_required", "Send Authorization: Bearer <METRICS_TOKEN>."),
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not settings.DEBUG:
        return JsonResponse(
            envelope("metrics_disabled", "/metrics is off: set METRICS_TOKEN to turn it on."),
            status=403,
        )
    try:
        body = generate_latest(REGISTRY)
    except Exception as exc:  # the database is away: say so, as /healthz would, not a 500
        log.warning("/metrics could not read the state", exc_info=True)
        return JsonResponse(
            envelope("metrics_unavailable", f"The state could not be read: {type(exc).__name__}."),
            status=503,
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
