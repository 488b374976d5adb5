"""`/metrics` (SPEC §17): Prometheus text read from the database at scrape time, behind a token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from prometheus_client.parser import text_string_to_metric_families

from escrow.services import deposit_create
from escrow.withdrawals import withdrawal_claim, withdrawal_open, withdrawal_settle
from execution import health
from execution.metrics import BUCKETS, recovery_record
from execution.models import RecoveryCount, WorkerHeartbeat
from execution.services import tasks_recover
from marketplace.models import Task
from marketplace.webhooks.keyring import secret_encrypt
from marketplace.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.factories import AgentBinaryFactory, TaskFactory

pytestmark = pytest.mark.django_db
CR = 1_000_000
TOKEN = "s3cret-scrape-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_WINDOW_SECONDS = 300
    settings.WORKER_STALE_SECONDS = 60


def scrape(client: Client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape, parsed by prometheus-client."""
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def task(
    status: str,
    *,
    ago: float,
    started: float | None = None,
    finished: float | None = None,
    binary=None,
    **fields,
) -> Task:
    """A task of `status` submitted `ago` seconds ago, claimed and settled as given."""
    now = timezone.now()
    row = TaskFactory.create(status=status, binary=binary or AgentBinaryFactory.create(), **fields)
    Task.objects.filter(pk=row.pk).update(
        created_at=now - timedelta(seconds=ago),
        started_at=None if started is None else now - timedelta(seconds=started),
        finished_at=None if finished is None else now - timedelta(seconds=finished),
    )
    return row


def beat(sentinel: str, host: str, *, seconds_ago: float) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        sentinel=sentinel,
        host=host,
        pid=100,
        cluster="agent-exchange",
        started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=seconds_ago),
    )


@pytest.fixture
def known_state(alice, bob):
    binary = AgentBinaryFactory.create()
    task("pending_funding", ago=5, binary=binary)
    now = timezone.now()
    for waited in (40, 5):
        queued = task("queued", ago=waited + 1, binary=binary)
        since = now - timedelta(seconds=waited)
        Task.objects.filter(pk=queued.pk).update(enqueued_at=since, queued_at=since)
    task("running", ago=3, started=2, binary=binary)
    task("cancelled", ago=50, finished=49, binary=binary)  # finished, but never ran
    # Settled in the window (the last 300 s) and submitted within 600 s: in the histogram.
    task("succeeded", ago=60, started=59.88, finished=59.8, binary=binary)  # 0.2 s / 0.08 s
    task("succeeded", ago=100, started=98.5, finished=97, binary=binary)  # 3 s / 1.5 s
    task("succeeded", ago=500, started=200, finished=150, binary=binary)  # 350 s / 50 s
    task("failed", ago=30, started=29.99, finished=29.97, failure_reason="timeout", binary=binary)
    # Settled before the window, or submitted more than twice the window ago: left out.
    task("failed", ago=420, started=410, finished=400, failure_reason="out_of_fuel", binary=binary)
    task("succeeded", ago=700, started=650, finished=100, binary=binary)

    deposit_create(user_id=alice.pk, amount=10 * CR)
    for paid in (True, False):
        withdrawal, _ = withdrawal_open(user_id=alice.pk, amount=2 * CR, provider="test")
        assert withdrawal_claim(withdrawal_id=withdrawal.pk)
        withdrawal_settle(withdrawal_id=withdrawal.pk, paid=paid, reference="ref", failure="no")

    endpoint = WebhookEndpoint.objects.create(
        owner=bob,
        url="https://hooks.example.com/x",
        events="task.succeeded",
        secret_encrypted=secret_encrypt("s"),
    )
    for i, status in enumerate(["delivered", "failed"]):
        WebhookDelivery.objects.create(
            event_id=f"evt_{i}",
            endpoint=endpoint,
            type="task.succeeded",
            object_id="t",
            created_at=now,
            status=status,
            attempts=1,
        )

    beat("Process-a", "worker-1", seconds_ago=3)
    beat("Process-b", "worker-1", seconds_ago=600)  # a dead cluster, kept for the admin
    beat("Process-c", "worker-2", seconds_ago=20)

    broker = get_broker()
    broker.enqueue("message-1")
    broker.enqueue("message-2")
    recovery_record({"requeued": 2, "resent": 3, "failed": 0, "errors": 1})
    recovery_record({"requeued": 2, "resent": 3, "failed": 0, "errors": 1})


def assert_known_state(samples: dict[str, dict[tuple, float]]) -> None:
    assert samples["agent_exchange_tasks"] == {
        (("status", "pending_funding"),): 1,
        (("status", "queued"),): 2,
        (("status", "running"),): 1,
    }
    finished = {
        dict(k)["status"] + "/" + dict(k)["reason"]: v
        for k, v in samples["agent_exchange_tasks_finished"].items()
    }
    assert finished == {
        "succeeded/": 3,
        "cancelled/": 1,
        **{f"failed/{reason}": 0 for reason in Task.FailureReason.values},
        "failed/timeout": 1,  # the out_of_fuel one finished before the window
    }

    buckets = samples["agent_exchange_settlement_latency_seconds_bucket"]
    expected = {
        "submitted": [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4],
        "claimed": [0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4],
    }
    bounds = [str(float(b)) for b in BUCKETS] + ["+Inf"]
    for stage, counts in expected.items():
        got = [buckets[(("le", le), ("stage", stage))] for le in bounds]
        assert got == counts, stage
    gcount = samples["agent_exchange_settlement_latency_seconds_gcount"]
    gsum = samples["agent_exchange_settlement_latency_seconds_gsum"]
    assert gcount == {(("stage", "submitted"),): 4, (("stage", "claimed"),): 4}
    assert gsum[(("stage", "submitted"),)] == pytest.approx(353.23, abs=1e-6)
    assert gsum[(("stage", "claimed"),)] == pytest.approx(51.6, abs=1e-6)
    assert samples["agent_exchange_metrics_window_seconds"] == {(): 300}

    assert samples["agent_exchange_queue_depth"] == {
        (("queue", "tasks"),): 2,
        (("queue", "broker_tasks"),): 0,
        (("queue", "broker_service"),): 2,
    }
    assert samples["agent_exchange_broker_up"] == {(): 1}
    assert 40 <= samples["agent_exchange_oldest_queued_task_age_seconds"][()] < 45

    assert samples["agent_exchange_recovery_total"] == {
        (("action", "requeued"),): 4,
        (("action", "resent"),): 6,
        (("action", "failed"),): 0,
        (("action", "errors"),): 2,
    }
    assert samples["agent_exchange_withdrawals"] == {
        (("status", "pending"),): 0,
        (("status", "processing"),): 0,
        (("status", "paid"),): 1,
        (("status", "failed"),): 1,
        (("status", "cancelled"),): 0,
    }
    assert samples["agent_exchange_webhook_deliveries"] == {
        (("status", "pending"),): 0,
        (("status", "delivered"),): 1,
        (("status", "failed"),): 1,
        (("status", "skipped"),): 0,
    }

    ages = samples["agent_exchange_worker_heartbeat_age_seconds"]
    assert set(ages) == {(("host", "worker-1"),), (("host", "worker-2"),)}
    assert 3 <= ages[(("host", "worker-1"),)] < 8  # its freshest cluster, not the dead one
    assert 20 <= ages[(("host", "worker-2"),)] < 25
    assert samples["agent_exchange_worker_clusters"] == {
        (("host", "worker-1"), ("state", "live")): 1,
        (("host", "worker-1"), ("state", "stale")): 1,
        (("host", "worker-2"), ("state", "live")): 1,
        (("host", "worker-2"), ("state", "stale")): 0,
    }
    # Work waits (two messages just sent), but for seconds, not WORKER_STALL_SECONDS.
    assert samples["agent_exchange_worker_stalled"] == {
        (("host", "worker-1"),): 0,
        (("host", "worker-2"),): 0,
    }


def test_metrics_report_the_exchange_state_in_prometheus_text(client, known_state):
    assert_known_state(scrape(client))


@pytest.mark.postgres
def test_metrics_report_the_same_on_postgresql(client, known_state):
    assert connection.vendor == "postgresql"
    assert_known_state(scrape(client))


def test_a_scrape_is_a_fixed_handful_of_queries_whatever_the_rows(client, known_state):
    with CaptureQueriesContext(connection) as before:
        scrape(client)
    binary = AgentBinaryFactory.create()
    for i in range(5):
        task("succeeded", ago=10 + i, started=9, finished=8, binary=binary)
        task("failed", ago=10 + i, started=9, finished=8, failure_reason="trap", binary=binary)
        beat(f"Process-more-{i}", f"worker-{i + 3}", seconds_ago=i)
    with CaptureQueriesContext(connection) as after:
        samples = scrape(client)
    # open tasks by status, finished ones in the window, the broker (each queue), recovery,
    # withdrawals, open funding discrepancies, webhook deliveries, heartbeats, and the work
    # waiting for the one queue a live cluster serves.
    assert len(before.captured_queries) == len(after.captured_queries) == 10
    assert (
        samples["agent_exchange_settlement_latency_seconds_gcount"][(("stage", "claimed"),)] == 14
    )


def test_an_empty_exchange_reports_zeros_and_no_hosts(client):
    samples = scrape(client)
    assert samples["agent_exchange_tasks"][(("status", "queued"),)] == 0
    trap = (("reason", "trap"), ("status", "failed"))
    assert samples["agent_exchange_tasks_finished"][trap] == 0
    assert samples["agent_exchange_settlement_latency_seconds_gcount"] == {
        (("stage", "submitted"),): 0,
        (("stage", "claimed"),): 0,
    }
    assert samples["agent_exchange_settlement_latency_seconds_gsum"][(("stage", "claimed"),)] == 0
    assert samples["agent_exchange_oldest_queued_task_age_seconds"] == {(): 0}
    assert samples["agent_exchange_recovery_total"][(("action", "resent"),)] == 0
    assert "agent_exchange_worker_heartbeat_age_seconds" not in samples


def test_a_broken_broker_leaves_its_depth_out_and_says_so(client, monkeypatch):
    def no_broker(queue):
        raise TimeoutError("redis did not answer")

    monkeypatch.setattr(health, "broker_for", no_broker)
    samples = scrape(client)
    assert samples["agent_exchange_queue_depth"] == {(("queue", "tasks"),): 0}
    assert samples["agent_exchange_broker_up"] == {(): 0}


def test_a_scrape_while_the_database_is_away_is_a_503_with_the_error_envelope(client, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(WorkerHeartbeat.objects, "order_by", broken)
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "metrics_unavailable",
        "message": "The state could not be read: ConnectionError.",
        "fields": {},
    }


def test_recovery_adds_what_it_resent_to_the_counter(client, settings):
    settings.REQUEUE_AFTER_SECONDS = 60
    stale = task("queued", ago=300)
    Task.objects.filter(pk=stale.pk).update(enqueued_at=timezone.now() - timedelta(seconds=120))
    assert tasks_recover()["resent"] == 1
    assert tasks_recover()["resent"] == 0  # nothing left behind: the counter stays
    assert dict(RecoveryCount.objects.values_list("action", "count")) == {"resent": 1}
    assert scrape(client)["agent_exchange_recovery_total"][(("action", "resent"),)] == 1


def test_a_recovery_count_that_cannot_be_written_does_not_fail_recovery(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(RecoveryCount.objects, "filter", broken)
    recovery_record({"resent": 1})
    assert "recovery counts not recorded" in caplog.text


# --- who may scrape -----------------------------------------------------------------------


def test_without_the_token_a_scrape_is_refused_with_the_error_envelope(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert response.json()["error"]["code"] == "metrics_token_required"
        assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_the_token_is_needed_even_with_debug_on(client, settings):
    settings.DEBUG = True
    assert client.get("/metrics").status_code == 401


def test_with_no_token_set_metrics_are_off_in_production(client, settings):
    settings.METRICS_TOKEN = None
    settings.DEBUG = False
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_disabled"


def test_with_no_token_set_metrics_are_open_in_development(client, settings):
    settings.METRICS_TOKEN = None
    settings.DEBUG = True
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"# TYPE agent_exchange_tasks gauge" in response.content
    assert "no-cache" in response.headers["Cache-Control"]
