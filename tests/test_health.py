"""A dead worker is visible (SPEC §13): /healthz and the operators' banner read heartbeats."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from execution import health, heartbeat, liveness
from execution.heartbeat import heartbeat_start, heartbeat_write, worker_status
from execution.models import WorkerHeartbeat
from marketplace.queues import broker_for
from tests.factories import AgentBinaryFactory, TaskFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def beat(
    *,
    seconds_ago: float,
    sentinel: str = "Process-1",
    host: str = "worker-1",
    queue: str | None = None,
    **fields,
) -> WorkerHeartbeat:
    now = timezone.now()
    return WorkerHeartbeat.objects.create(
        sentinel=sentinel,
        host=host,
        pid=4242,
        cluster=queue or django_settings.SERVICE_QUEUE,
        started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=seconds_ago),
        **fields,
    )


def host_beats(*, seconds_ago: float, host: str = "worker-1", **fields) -> None:
    """A host as `manage.py supervise` runs it: a cluster for each queue."""
    for role, queue in (
        ("tasks", django_settings.TASK_QUEUE),
        ("service", django_settings.SERVICE_QUEUE),
    ):
        beat(
            seconds_ago=seconds_ago,
            sentinel=f"Process-{host}-{role}",
            host=host,
            queue=queue,
            **fields,
        )


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("root", is_staff=True))
    return client


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


TOKEN = "scrape-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


# --- /healthz -----------------------------------------------------------------------------


def test_anyone_gets_the_verdict_alone(client):
    host_beats(seconds_ago=2)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "worker": "ok"}
    assert "no-cache" in response.headers["Cache-Control"]


def test_staff_get_every_host_with_its_clusters_and_the_queues(operator):
    host_beats(seconds_ago=2)
    rows = {row.cluster: row for row in WorkerHeartbeat.objects.all()}
    response = operator.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["worker"]) == ("ok", "ok", "ok")
    assert body["checks"] == {
        "database": "ok",
        "broker": "ok",
        "queued_messages": 0,
        "worker": "ok",
        "clusters": 2,
        "worker_silent_seconds": 2,
        "stalled_hosts": [],
        "unserved_queues": [],
    }
    assert body["queue"] == {"tasks": 0, "broker": {"tasks": 0, "service": 0}}
    [host] = body["hosts"]
    assert (host["host"], host["age_seconds"], host["stale"], host["stalled"]) == (
        "worker-1",
        2,
        False,
        False,
    )
    clusters = {cluster["cluster"]: cluster for cluster in host["clusters"]}
    assert set(clusters) == set(rows)
    service = clusters[django_settings.SERVICE_QUEUE]
    row = rows[django_settings.SERVICE_QUEUE]
    assert service == {
        "cluster": django_settings.SERVICE_QUEUE,
        "pid": 4242,
        "started_at": row.started_at.isoformat(),
        "last_seen": row.last_seen.isoformat(),
        "age_seconds": 2,
        "stale": False,
        "stopped": False,
        "idle_seconds": 3600,
        "waiting_seconds": None,
        "stalled": False,
    }


def test_the_metrics_token_gets_the_detail_too_and_nothing_else_does(client, settings, alice):
    settings.METRICS_TOKEN = TOKEN
    host_beats(seconds_ago=2)
    assert "hosts" in client.get("/healthz", headers=BEARER).json()
    assert "hosts" not in client.get("/healthz", headers={"Authorization": "Bearer nope"}).json()
    client.force_login(alice)  # a user, not staff
    assert set(client.get("/healthz").json()) == {"status", "database", "worker"}


def test_healthz_is_unavailable_when_no_worker_ever_reported(client, operator):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "worker": "stale"}
    checks = operator.get("/healthz").json()["checks"]
    assert (checks["worker"], checks["clusters"], checks["worker_silent_seconds"]) == (
        "stale",
        0,
        None,
    )


def test_a_queue_no_live_cluster_serves_is_stale(operator):
    beat(seconds_ago=2, queue=django_settings.SERVICE_QUEUE)  # a lone `qcluster`, no task cluster
    response = operator.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["worker"], checks["unserved_queues"]) == ("stale", [django_settings.TASK_QUEUE])


def test_healthz_is_unavailable_once_the_last_heartbeat_is_older_than_the_setting(
    client, operator, settings
):
    settings.WORKER_STALE_SECONDS = 60
    host_beats(seconds_ago=58, host="fresh")
    host_beats(seconds_ago=600, host="dead")
    body = operator.get("/healthz").json()
    assert (body["checks"]["worker"], body["checks"]["clusters"]) == ("ok", 2)

    WorkerHeartbeat.objects.filter(host="fresh").update(
        last_seen=timezone.now() - timedelta(seconds=61)
    )
    response = operator.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["worker"], checks["clusters"], checks["worker_silent_seconds"]) == (
        "stale",
        0,
        61,
    )
    assert client.get("/healthz").json()["worker"] == "stale"

    settings.WORKER_STALE_SECONDS = 120
    assert client.get("/healthz").status_code == 200


def test_healthz_lists_every_host_with_its_clusters_and_the_queue(operator, settings, alice):
    settings.WORKER_STALE_SECONDS = 60
    beat(seconds_ago=600, sentinel="Process-dead", host="worker-1")
    host_beats(seconds_ago=3, host="worker-1")
    beat(seconds_ago=90, sentinel="Process-gone", host="worker-2")
    binary = AgentBinaryFactory.create()
    for status in ("queued", "queued", "running", "succeeded"):
        TaskFactory.create(status=status, binary=binary)
    broker_for(django_settings.SERVICE_QUEUE).enqueue("a message")
    broker_for(django_settings.TASK_QUEUE).enqueue("a run")

    response = operator.get("/healthz")

    assert response.status_code == 200  # one live host is enough
    body = response.json()
    assert body["queue"] == {"tasks": 2, "broker": {"tasks": 1, "service": 1}}
    assert body["checks"]["queued_messages"] == 2
    hosts = {host["host"]: host for host in body["hosts"]}
    assert list(hosts) == ["worker-1", "worker-2"]
    assert (hosts["worker-1"]["age_seconds"], hosts["worker-1"]["stale"]) == (3, False)
    assert sorted((c["age_seconds"], c["stale"]) for c in hosts["worker-1"]["clusters"]) == [
        (3, False),
        (3, False),
        (600, True),
    ]
    assert (hosts["worker-2"]["age_seconds"], hosts["worker-2"]["stale"]) == (90, True)
    assert [c["pid"] for c in hosts["worker-2"]["clusters"]] == [4242]


def test_healthz_is_unavailable_when_the_database_is(client, monkeypatch, settings):
    settings.METRICS_TOKEN = TOKEN  # the detail without a session (which needs the database)
    host_beats(seconds_ago=1)

    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", broken)
        anonymous = client.get("/healthz")
        detailed = client.get("/healthz", headers=BEARER)
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "unavailable", "database": "error", "worker": "unknown"}
    assert detailed.json()["checks"]["database"] == "error: ConnectionError"
    assert detailed.json()["checks"]["worker"] == "unknown"
    assert (detailed.json()["hosts"], detailed.json()["queue"]["tasks"]) == ([], None)


def test_healthz_is_unavailable_when_the_broker_is(operator, monkeypatch):
    host_beats(seconds_ago=1)

    def no_broker(queue):
        raise TimeoutError("redis did not answer")

    monkeypatch.setattr(health, "broker_for", no_broker)
    response = operator.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["database"], checks["broker"], checks["worker"]) == (
        "ok",
        "error: TimeoutError",
        "ok",
    )


# --- stalled clusters (SPEC §18) -------------------------------------------------------------


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def test_a_cluster_with_work_waiting_that_started_nothing_is_stalled(client, operator, settings):
    settings.WORKER_STALL_SECONDS = 30
    host_beats(seconds_ago=1, host="worker-1", progress_at=ago(40))
    host_beats(seconds_ago=1, host="worker-2", progress_at=ago(40))
    # Messages have sat 35 s in worker-1's task cluster's own queue: its workers take none.
    WorkerHeartbeat.objects.filter(host="worker-1", cluster=django_settings.TASK_QUEUE).update(
        queue_waiting_since=ago(35)
    )
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "unavailable", "database": "ok", "worker": "stalled"}
    body = operator.get("/healthz").json()
    assert body["checks"]["stalled_hosts"] == ["worker-1"]
    hosts = {host["host"]: host for host in body["hosts"]}
    assert (hosts["worker-1"]["stalled"], hosts["worker-2"]["stalled"]) == (True, False)
    stalled = [c for c in hosts["worker-1"]["clusters"] if c["stalled"]]
    assert [(c["cluster"], c["waiting_seconds"], c["idle_seconds"]) for c in stalled] == [
        (django_settings.TASK_QUEUE, 35, 40)
    ]


def test_work_waiting_in_the_broker_stalls_every_cluster_of_its_queue_that_started_nothing(
    operator, settings
):
    settings.WORKER_STALL_SECONDS = 30
    host_beats(seconds_ago=1, host="idle", progress_at=ago(50))
    host_beats(seconds_ago=1, host="busy", progress_at=ago(1))
    broker_for(django_settings.TASK_QUEUE).enqueue("a run")
    OrmQ.objects.update(lock=ago(45))  # sent 45 s ago, taken by nobody
    body = operator.get("/healthz").json()
    assert body["worker"] == "stalled"
    assert body["checks"]["stalled_hosts"] == ["idle"]


def test_no_stall_while_the_cluster_works_or_the_wait_is_short(client, settings):
    settings.WORKER_STALL_SECONDS = 30
    # Busy: its queue has held work for a minute, but it keeps starting tasks.
    host_beats(seconds_ago=1, progress_at=ago(2), queue_waiting_since=ago(60))
    assert client.get("/healthz").json()["worker"] == "ok"
    # Idle for a long time, and work arrived 10 s ago: not yet.
    WorkerHeartbeat.objects.update(progress_at=ago(600), queue_waiting_since=ago(10))
    assert client.get("/healthz").json()["worker"] == "ok"
    WorkerHeartbeat.objects.update(queue_waiting_since=ago(31))
    assert client.get("/healthz").json()["worker"] == "stalled"
    # A cluster started less than WORKER_STALL_SECONDS ago has not had its chance yet.
    WorkerHeartbeat.objects.update(progress_at=None, started_at=ago(20))
    assert client.get("/healthz").json()["worker"] == "ok"


def test_a_cluster_its_supervisor_stopped_is_judged_no_more(client, settings):
    settings.WORKER_STALL_SECONDS = 30
    host_beats(seconds_ago=1, progress_at=ago(40), queue_waiting_since=ago(35), instance="first")
    assert client.get("/healthz").json()["worker"] == "stalled"
    assert liveness.instance_verdict("first") == "stalled"
    liveness.instance_stopped("first")
    host_beats(seconds_ago=1, host="worker-1-again", instance="second")
    assert client.get("/healthz").json()["worker"] == "ok"
    assert liveness.instance_verdict("second") == "ok"
    assert liveness.instance_verdict("never-started") == "starting"


def test_staff_see_a_stall_banner_naming_the_host(operator, settings):
    settings.WORKER_STALL_SECONDS = 30
    host_beats(seconds_ago=1, host="worker-7", progress_at=ago(40), queue_waiting_since=ago(35))
    body = operator.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stalled"' in body
    assert "Workers are stalled on worker-7." in body


def test_a_worker_reports_progress_while_busy_within_the_timeout(monkeypatch, settings):
    settings.Q_TIMEOUT = 90
    monkeypatch.setattr(liveness.PROGRESS, "last_started", None)
    monkeypatch.setattr(liveness.PROGRESS, "busy_since", None)
    assert liveness.worker_progress(1000.0) is None
    liveness.job_started()
    started = liveness.PROGRESS.last_started
    assert started is not None
    assert liveness.worker_progress(started + 60) == started + 60  # busy: progress now
    assert liveness.worker_progress(started + 200) == started  # stuck past the timeout
    liveness.job_finished()
    assert liveness.worker_progress(started + 60) == started


# --- heartbeats ---------------------------------------------------------------------------


def test_a_heartbeat_refreshes_its_cluster_row_and_keeps_when_it_started():
    heartbeat_write(sentinel="Process-a", host="worker-1", pid=10, cluster="agent-exchange")
    first = WorkerHeartbeat.objects.get()
    heartbeat_write(sentinel="Process-a", host="worker-1", pid=10, cluster="agent-exchange")
    heartbeat_write(sentinel="Process-b", host="worker-2", pid=10, cluster="agent-exchange")
    rows = {row.sentinel: row for row in WorkerHeartbeat.objects.all()}
    assert set(rows) == {"Process-a", "Process-b"}
    assert rows["Process-a"].started_at == first.started_at
    assert rows["Process-a"].last_seen > first.last_seen
    assert worker_status().live == 2


def test_a_worker_beats_until_its_sentinel_is_gone_and_drops_day_old_rows(monkeypatch, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 10
    beat(seconds_ago=2 * 86_400, sentinel="Process-long-dead")
    parents = iter([7, 7, 7, 1])  # the sentinel (pid 7) dies after three ticks: init adopts us
    clock = iter([0.0, 10.0, 20.0])  # a beat due at every tick
    monkeypatch.setattr(heartbeat.os, "getppid", lambda: next(parents))
    fake = SimpleNamespace(time=time.time, sleep=lambda s: None, monotonic=lambda: next(clock))
    monkeypatch.setattr(heartbeat, "time", fake)
    monkeypatch.setattr(heartbeat, "connection", SimpleNamespace(close=lambda: None))
    written = []
    real_write = heartbeat.heartbeat_write

    def write(**row):
        written.append(row)
        real_write(**row)

    monkeypatch.setattr(heartbeat, "heartbeat_write", write)
    heartbeat._beat("Process-7", 7)  # returns once the sentinel is gone
    assert len(written) == 3
    row = WorkerHeartbeat.objects.get()
    assert (row.sentinel, row.pid, row.cluster) == ("Process-7", 7, "agent-exchange")


def test_work_waiting_in_the_clusters_own_queue_is_written_at_once(monkeypatch, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 10
    depths = iter([0, 3, 3, 0])  # messages arrive and sit, then a worker takes them
    parents = iter([7, 7, 7, 7, 1])
    clock = iter([0.0, 1.0, 2.0, 3.0])  # no beat due after the first
    monkeypatch.setattr(liveness, "queue_depth", lambda: next(depths))
    monkeypatch.setattr(heartbeat.os, "getppid", lambda: next(parents))
    fake = SimpleNamespace(time=time.time, sleep=lambda s: None, monotonic=lambda: next(clock))
    monkeypatch.setattr(heartbeat, "time", fake)
    monkeypatch.setattr(heartbeat, "connection", SimpleNamespace(close=lambda: None))
    written = []
    monkeypatch.setattr(heartbeat, "heartbeat_write", lambda **row: written.append(row))
    heartbeat._beat("Process-7", 7)
    waiting = [row["queue_waiting_since"] for row in written]
    assert len(waiting) == 3  # the first beat, work waiting, work taken
    assert waiting[0] is None and waiting[1] is not None and waiting[2] is None


def test_progress_only_moves_forward_and_is_the_latest_of_the_workers():
    started = timezone.now() - timedelta(minutes=5)
    common: dict[str, Any] = {
        "sentinel": "Process-a",
        "host": "h",
        "pid": 1,
        "cluster": "agent-exchange",
    }
    heartbeat_write(**common, progress_at=started + timedelta(seconds=30))
    heartbeat_write(**common, progress_at=started)  # another worker, idle longer
    assert WorkerHeartbeat.objects.get().progress_at == started + timedelta(seconds=30)
    heartbeat_write(**common, progress_at=started + timedelta(seconds=60))
    assert WorkerHeartbeat.objects.get().progress_at == started + timedelta(seconds=60)


def test_only_a_forked_worker_starts_a_heartbeat():
    # The test process has no multiprocessing parent: nothing to report for.
    assert heartbeat_start(sender="django_q", proc_name="Process-x") is None
    assert WorkerHeartbeat.objects.count() == 0


# --- the operators' banner -----------------------------------------------------------------


def test_staff_see_a_banner_on_the_dashboard_when_the_worker_is_stale(operator, settings):
    settings.WORKER_STALE_SECONDS = 60
    host_beats(seconds_ago=75)
    body = operator.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stale"' in body
    # 75 s, or a little more on a loaded machine: the age is read when the page renders.
    assert re.search(r"No worker has reported for 7[5-9] s\.", body)
    assert "manage.py supervise" in body


def test_staff_are_told_which_queue_no_worker_takes(operator):
    beat(seconds_ago=2, queue=django_settings.SERVICE_QUEUE)
    body = operator.get(reverse("dashboard")).content.decode()
    assert f"No worker takes the {django_settings.TASK_QUEUE} queue." in body


def test_staff_are_told_when_no_worker_ever_reported(operator):
    body = operator.get(reverse("task-list")).content.decode()
    assert "No worker has ever reported." in body


def test_the_admin_shows_the_banner_too(operator):
    operator_user = User.objects.get(username="root")
    User.objects.filter(pk=operator_user.pk).update(is_superuser=True)
    body = operator.get(reverse("admin:index")).content.decode()
    assert 'data-testid="worker-stale"' in body


def test_no_banner_while_a_worker_is_fresh(operator):
    host_beats(seconds_ago=3)
    body = operator.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stale"' not in body
    assert 'data-testid="worker-stalled"' not in body


def test_users_who_are_not_staff_never_see_the_banner_nor_pay_for_it(as_alice):
    beat(seconds_ago=3600)
    with CaptureQueriesContext(connection) as queries:
        body = as_alice.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stale"' not in body
    assert not [q for q in queries.captured_queries if "workerheartbeat" in q["sql"]]


def test_the_heartbeats_are_read_once_for_a_staff_page_and_not_for_a_fragment(operator):
    with CaptureQueriesContext(connection) as queries:
        operator.get(reverse("dashboard"))
    assert len([q for q in queries.captured_queries if "workerheartbeat" in q["sql"]]) == 1
    with CaptureQueriesContext(connection) as queries:
        operator.get(reverse("dashboard"), **HTMX)
    assert not [q for q in queries.captured_queries if "workerheartbeat" in q["sql"]]


def test_the_admin_lists_the_clusters_by_host_with_age_staleness_and_the_queue(operator, settings):
    settings.WORKER_STALE_SECONDS = 60
    User.objects.filter(username="root").update(is_superuser=True)
    beat(seconds_ago=600, sentinel="Process-dead", host="worker-2")
    beat(seconds_ago=5, sentinel="Process-live", host="worker-1")
    TaskFactory.create(status="queued")
    broker_for(django_settings.SERVICE_QUEUE).enqueue("one")
    broker_for(django_settings.SERVICE_QUEUE).enqueue("two")
    broker_for(django_settings.TASK_QUEUE).enqueue("three")
    body = operator.get(reverse("admin:execution_workerheartbeat_changelist")).content.decode()
    assert "Queued tasks: <strong>1</strong>" in body
    assert "tasks <strong>1</strong>, service <strong>2</strong>" in body
    table = body.split('id="result_list"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>.*?</tr>", table, re.S)[1:]  # after the header
    assert len(rows) == 2
    assert "worker-1" in rows[0] and "worker-2" in rows[1]
    assert '<td class="field-age">5 s</td>' in rows[0]
    assert '<td class="field-age">600 s</td>' in rows[1]
    assert 'alt="False"' in rows[0].split("field-stale")[1]
    assert 'alt="True"' in rows[1].split("field-stale")[1]


def test_the_heartbeats_are_read_only_in_the_admin(operator):
    User.objects.filter(username="root").update(is_superuser=True)
    beat(seconds_ago=1)
    row = WorkerHeartbeat.objects.get()
    changelist = reverse("admin:execution_workerheartbeat_changelist")
    assert b"worker-1" in operator.get(changelist).content
    change = reverse("admin:execution_workerheartbeat_change", args=[row.pk])
    assert operator.post(change, {"host": "elsewhere"}).status_code == 403
    delete = reverse("admin:execution_workerheartbeat_delete", args=[row.pk])
    assert operator.post(delete).status_code == 403
    assert WorkerHeartbeat.objects.get().host == "worker-1"
