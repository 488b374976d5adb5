"""Three worker hosts, one PostgreSQL, a real redis-server (SPEC §17): SIGKILL a whole host
mid-run, restart Redis once, bring the host back — every task final exactly once, one
receipt and one reputation event each, the money exact to the µCR and both audits clean.

Each host is a `qcluster` tree with its own data directory, upload directory and module
cache (binaries come from the database); where the machine allows it each also runs in its
own network namespace. The Redis broker is at-most-once: the messages a killed host had
taken, and every message queued when Redis restarts, are lost. The task table is the source
of truth, and recovery — ticked here every second, a minute on real hosts — re-sends them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from django.db.models import Sum
from django_q.conf import Conf
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from escrow.audit import ledger_audit
from escrow.channels import channel_close, channel_open, key_register
from escrow.models import Account
from escrow.services import deposit_create
from execution import tasks as scheduled
from execution.models import Receipt
from marketplace.binaries import binary_upload
from marketplace.models import Task
from reputation.audit import reputation_audit
from reputation.models import ReputationEvent
from tests.factories import KEY, AgentFactory, UserFactory, held_for, public, sign
from tests.hosts import Host, Namespaces, database_address, database_url_via
from tests.rediscluster import RedisServer
from tests.workers import wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _one_requester_submits_hundreds(settings):
    # These tests load one requester far past the abuse limit on purpose.
    settings.MAX_TASKS_IN_FLIGHT = 100_000


log = logging.getLogger(__name__)
ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
HOSTS, TASKS = 3, 300
FUNDS, CHANNEL_DEPOSIT, BUDGET = 100_000_000, 40_000_000, 50_000


@pytest.fixture
def redis_broker(monkeypatch):
    """A throwaway redis-server, and this process (the web tier) enqueueing to it."""
    with RedisServer() as server:
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "REDIS", server.url)
        yield server


@pytest.fixture
def namespaces():
    spaces = Namespaces(HOSTS)
    if not spaces.setup():
        logging.getLogger(__name__).warning("hosts share one network: %s", spaces.reason)
    yield spaces
    spaces.teardown()


def system_balance(kind: str) -> int:
    """What a system account holds (summed, should it be split in shards)."""
    accounts = Account.objects.filter(kind=kind, user=None)
    return accounts.aggregate(total=Sum("balance"))["total"] or 0


def final_count() -> int:
    return Task.objects.filter(status__in=Task.FINAL_STATUSES).count()


def open_tasks() -> set[str]:
    return {
        str(pk)
        for pk in Task.objects.exclude(status__in=Task.FINAL_STATUSES).values_list("pk", flat=True)
    }


class Ticker(threading.Thread):
    """The scheduler's recovery tick, every second instead of every minute."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.resent = self.requeued = 0

    def run(self) -> None:
        from django.db import connection

        while not self.stopped.wait(1.0):
            counts = scheduled.recover()
            self.resent += counts.get("resent", 0)
            self.requeued += counts.get("requeued", 0)
        connection.close()


class Watch(threading.Thread):
    """Records when every task of a watched set is final, while the test goes on."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.watched: dict[str, tuple[set[str], float]] = {}
        self.took: dict[str, float] = {}

    def watch(self, name: str, tasks: set[str]) -> None:
        with self.lock:
            self.watched[name] = (tasks, time.monotonic())

    def run(self) -> None:
        from django.db import connection

        while not self.stopped.wait(0.2):
            with self.lock:
                pending = [(n, t, at) for n, (t, at) in self.watched.items() if n not in self.took]
            for name, tasks, since in pending:
                unfinished = Task.objects.filter(pk__in=tasks).exclude(
                    status__in=Task.FINAL_STATUSES
                )
                if not unfinished.exists():
                    self.took[name] = time.monotonic() - since
        connection.close()


def test_three_hosts_survive_a_host_kill_and_a_redis_restart(
    settings, tmp_path, redis_broker, namespaces, capsys
):
    settings.REQUEUE_AFTER_SECONDS = 5
    settings.LEASE_MARGIN_SECONDS = 1
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    charlie = UserFactory.create(username="charlie")
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=2_000)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    for requester in (alice, charlie):
        deposit_create(user_id=requester.pk, amount=FUNDS)
    key_register(user_id=alice.pk, public_key=public(KEY))
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=CHANNEL_DEPOSIT
    )

    db_host, db_port = database_address()
    if namespaces.available:
        namespaces.forward([db_port, redis_broker.port])
    hosts = []
    for index in range(HOSTS):
        # In its own namespace a host reaches PostgreSQL and Redis through its gateway only.
        address = namespaces.gateway(index) if namespaces.available else db_host
        hosts.append(
            Host(
                f"host{index}",
                tmp_path,
                redis_url=redis_broker.url.replace(redis_broker.host, address),
                database_url=database_url_via(address, db_port),
                netns=namespaces.names[index] if namespaces.available else None,
            )
        )

    clients = {}
    for user in (alice, charlie):
        clients[user.pk] = APIClient()
        clients[user.pk].credentials(
            HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}"
        )
    submitted: list[str] = []
    errors: list[str] = []
    payers = [(charlie, 0), (alice, 1)]  # alice pays by channel, charlie from her wallet

    def submit_all(requester, by_channel: int) -> None:
        from django.db import connection

        authorized = 0
        for i in range(by_channel, TASKS, 2):
            body = {"agent": "echo", "input": f"task {i}", "budget": BUDGET + i, "timeout_ms": 3000}
            if by_channel:
                authorized += BUDGET + i
                body |= {"payment": "channel", "channel": str(channel.pk)}
                body["voucher"] = sign(channel.pk, i, authorized)
            response = clients[requester.pk].post("/api/v1/tasks/", body, format="json")
            if response.status_code != 201:
                errors.append(f"{i}: {response.status_code} {response.content[:200]!r}")
            else:
                submitted.append(response.json()["id"])
        connection.close()

    ticker, watch = Ticker(), Watch()
    started = time.monotonic()
    for host in hosts:
        host.start()
    ticker.start()
    watch.start()
    submitters = [threading.Thread(target=submit_all, args=payer) for payer in payers]
    for submitter in submitters:
        submitter.start()
    try:
        # Kill host0 once work is flowing: its running task and the messages it took are lost.
        wait_for(lambda: final_count() >= 40, timeout=60, message="40 tasks", cluster=hosts[0])
        in_flight_at_kill = open_tasks()
        hosts[0].kill()
        watch.watch("kill", in_flight_at_kill)

        # Restart Redis while submissions go on: every queued message is lost, and what is
        # submitted while it is down is committed but not sent (recovery sends it).
        wait_for(lambda: final_count() >= 110, timeout=90, message="110 tasks", cluster=hosts[1])
        # The hosts keep up with the submissions, so hold them still a moment to let a queue
        # build up in Redis (stalled machines, which the leases also cover).
        for host in hosts[1:]:
            host.pause()
        try:
            wait_for(lambda: redis_broker.queue_length() >= 10, timeout=20, message="a queue")
        finally:
            open_at_restart = open_tasks()
            queued_in_redis = redis_broker.queue_length()
            redis_broker.restart(down_seconds=1.0)
            for host in hosts[1:]:
                host.resume()
        watch.watch("redis", open_at_restart)
        hosts[0].start()  # the machine comes back (same data directory)

        for submitter in submitters:
            submitter.join(timeout=120)
        wait_for(
            lambda: final_count() == TASKS and len(watch.took) == 2,
            timeout=120,
            message=f"{TASKS} tasks",
            cluster=hosts[1],
        )
        finished = time.monotonic() - started
    finally:
        ticker.stopped.set()
        watch.stopped.set()
        for thread in (ticker, watch):
            thread.join(timeout=10)
        for host in hosts:
            host.stop()

    assert not errors, errors[:3]
    assert len(submitted) == TASKS
    # Exactly once: every task settled once, with one receipt and one reputation event.
    assert Task.objects.filter(status="succeeded").count() == TASKS
    assert Receipt.objects.count() == TASKS
    assert ReputationEvent.objects.count() == TASKS
    assert sorted(Receipt.objects.values_list("task_id", flat=True)) == sorted(
        Task.objects.values_list("pk", flat=True)
    )
    # The money, to the µCR: what requesters lost the owner and the platform gained.
    channel_close(channel_id=channel.pk, by_user_id=alice.pk)
    costs = Task.objects.aggregate(cost=Sum("cost"), fee=Sum("fee"))
    lost = sum(FUNDS - Account.objects.get(user=u).balance for u in (alice, charlie))
    earned = Account.objects.get(user=bob).balance + held_for(bob)
    platform = system_balance("platform_fees")
    assert lost == costs["cost"] > 0
    assert earned + platform == lost
    assert platform == costs["fee"]
    for kind in ("escrow", "channels"):
        assert system_balance(kind) == 0
    ledger = ledger_audit()
    assert ledger.ok, ledger.violations
    reputation = reputation_audit()
    assert reputation.ok, reputation.violations
    retried = Task.objects.filter(attempts__gt=1).count()
    network = "own network namespaces" if namespaces.available else namespaces.reason
    with capsys.disabled():
        print(
            f"\n  distributed: {TASKS} tasks (half by channel) on {HOSTS} hosts "
            f"({network}); "
            f"1 host SIGKILLed with {len(in_flight_at_kill)} tasks open, Redis restarted with "
            f"{len(open_at_restart)} open ({queued_in_redis} messages queued in it); recovery "
            f"re-sent {ticker.resent} messages and requeued {ticker.requeued} lost runs "
            f"({retried} tasks ran twice); every task open at the kill was final "
            f"{watch.took['kill']:.1f}s after it, every task open at the Redis restart "
            f"{watch.took['redis']:.1f}s after it; all {TASKS} final after {finished:.1f}s"
        )
