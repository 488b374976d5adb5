"""A dead worker is visible (SPEC §13): /healthz and the operators' banner read heartbeats."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker

from execution import health, heartbeat
from execution.heartbeat import heartbeat_start, heartbeat_write, worker_status
from execution.models import WorkerHeartbeat
from tests.factories import AgentBinaryFactory, TaskFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def beat(*, seconds_ago: float, sentinel: str = "Process-1", host: str = "worker-1") -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        sentinel=sentinel,
        host=host,
        pid=4242,
        cluster="agent-exchange",
        started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=seconds_ago),
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


# --- /healthz -----------------------------------------------------------------------------


def test_healthz_is_ok_with_a_fresh_worker_heartbeat(client):
    beat(seconds_ago=2)
    started, last_seen = WorkerHeartbeat.objects.values_list("started_at", "last_seen").get()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {
            "database": "ok",
            "broker": "ok",
            "queued_messages": 0,
            "worker": "ok",
            "clusters": 1,
            "worker_silent_seconds": 2,
        },
        "queue": {"tasks": 0, "broker": 0},
        "hosts": [
            {
                "host": "worker-1",
                "age_seconds": 2,
                "stale": False,
                "clusters": [
                    {
                        "cluster": "agent-exchange",
                        "pid": 4242,
                        "started_at": started.isoformat(),
                        "last_seen": last_seen.isoformat(),
                        "age_seconds": 2,
                        "stale": False,
                    }
                ],
            }
        ],
    }
    assert "no-cache" in response.headers["Cache-Control"]


def test_healthz_is_unavailable_when_no_worker_ever_reported(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"] | {"database": "ok", "broker": "ok"} == {
        "database": "ok",
        "broker": "ok",
        "queued_messages": 0,
        "worker": "stale",
        "clusters": 0,
        "worker_silent_seconds": None,
    }


def test_healthz_is_unavailable_once_the_last_heartbeat_is_older_than_the_setting(client, settings):
    settings.WORKER_STALE_SECONDS = 60
    beat(seconds_ago=58, sentinel="Process-fresh")
    beat(seconds_ago=600, sentinel="Process-dead")
    body = client.get("/healthz").json()
    assert (body["checks"]["worker"], body["checks"]["clusters"]) == ("ok", 1)

    WorkerHeartbeat.objects.filter(sentinel="Process-fresh").update(
        last_seen=timezone.now() - timedelta(seconds=61)
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["worker"], checks["clusters"], checks["worker_silent_seconds"]) == (
        "stale",
        0,
        61,
    )

    settings.WORKER_STALE_SECONDS = 120
    assert client.get("/healthz").status_code == 200


def test_healthz_lists_every_host_with_its_clusters_and_the_queue(client, settings, alice):
    settings.WORKER_STALE_SECONDS = 60
    beat(seconds_ago=600, sentinel="Process-dead", host="worker-1")
    beat(seconds_ago=3, sentinel="Process-live", host="worker-1")
    beat(seconds_ago=90, sentinel="Process-gone", host="worker-2")
    binary = AgentBinaryFactory.create()
    for status in ("queued", "queued", "running", "succeeded"):
        TaskFactory.create(status=status, binary=binary)
    get_broker().enqueue("a message")

    response = client.get("/healthz")

    assert response.status_code == 200  # one live cluster is enough
    body = response.json()
    assert body["queue"] == {"tasks": 2, "broker": 1}
    assert body["checks"]["queued_messages"] == 1
    hosts = {host["host"]: host for host in body["hosts"]}
    assert list(hosts) == ["worker-1", "worker-2"]
    assert (hosts["worker-1"]["age_seconds"], hosts["worker-1"]["stale"]) == (3, False)
    assert [(c["age_seconds"], c["stale"]) for c in hosts["worker-1"]["clusters"]] == [
        (3, False),
        (600, True),
    ]
    assert (hosts["worker-2"]["age_seconds"], hosts["worker-2"]["stale"]) == (90, True)
    assert [c["pid"] for c in hosts["worker-2"]["clusters"]] == [4242]


def test_healthz_is_unavailable_when_the_database_is(client, monkeypatch):
    beat(seconds_ago=1)

    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", broken)
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "error: ConnectionError"
    assert response.json()["checks"]["worker"] == "unknown"
    assert (response.json()["hosts"], response.json()["queue"]["tasks"]) == ([], None)


def test_healthz_is_unavailable_when_the_broker_is(client, monkeypatch):
    beat(seconds_ago=1)

    def no_broker():
        raise TimeoutError("redis did not answer")

    monkeypatch.setattr(health, "get_broker", no_broker)
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["database"], checks["broker"], checks["worker"]) == (
        "ok",
        "error: TimeoutError",
        "ok",
    )


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


def test_a_worker_beats_until_its_sentinel_is_gone_and_drops_day_old_rows(monkeypatch):
    beat(seconds_ago=2 * 86_400, sentinel="Process-long-dead")
    parents = iter([7, 7, 7, 1])  # the sentinel (pid 7) dies after three beats: init adopts us
    monkeypatch.setattr(heartbeat.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(heartbeat.time, "sleep", lambda seconds: None)
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


def test_only_a_forked_worker_starts_a_heartbeat():
    # The test process has no multiprocessing parent: nothing to report for.
    assert heartbeat_start(sender="django_q", proc_name="Process-x") is None
    assert WorkerHeartbeat.objects.count() == 0


# --- the operators' banner -----------------------------------------------------------------


def test_staff_see_a_banner_on_the_dashboard_when_the_worker_is_stale(operator, settings):
    settings.WORKER_STALE_SECONDS = 60
    beat(seconds_ago=75)
    body = operator.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stale"' in body
    # 75 s, or a little more on a loaded machine: the age is read when the page renders.
    assert re.search(r"No worker has reported for 7[5-9] s\.", body)
    assert "manage.py qcluster" in body


def test_staff_are_told_when_no_worker_ever_reported(operator):
    body = operator.get(reverse("task-list")).content.decode()
    assert "No worker has ever reported." in body


def test_the_admin_shows_the_banner_too(operator):
    operator_user = User.objects.get(username="root")
    User.objects.filter(pk=operator_user.pk).update(is_superuser=True)
    body = operator.get(reverse("admin:index")).content.decode()
    assert 'data-testid="worker-stale"' in body


def test_no_banner_while_a_worker_is_fresh(operator):
    beat(seconds_ago=3)
    body = operator.get(reverse("dashboard")).content.decode()
    assert 'data-testid="worker-stale"' not in body


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
    get_broker().enqueue("one")
    get_broker().enqueue("two")
    body = operator.get(reverse("admin:execution_workerheartbeat_changelist")).content.decode()
    assert "Queued tasks: <strong>1</strong>" in body
    assert "messages waiting in the broker:\n    <strong>2</strong>" in body
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
