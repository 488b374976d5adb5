"""Nothing free to abuse (SPEC §23): tasks in flight per requester, and the workers' fair
share between requesters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import close_old_connections, connection
from rest_framework.test import APIClient

from escrow.channels import channel_open, key_register
from escrow.models import Account, Escrow
from escrow.services import deposit_create
from execution.services import task_claim
from marketplace.batches import MAX_BATCH, tasks_submit
from marketplace.binaries import binary_upload
from marketplace.errors import TooManyTasks
from marketplace.models import Task
from marketplace.services import task_cancel, task_submit
from tests.factories import KEY, AgentFactory, UserFactory, public, sign
from tests.workers import Cluster, wait_for

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
FUNDS = 200_000_000
BUDGET = 10_000
BACKLOG = 10_000  # SPEC §23's backlog


@pytest.fixture
def people(db):
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    charlie = UserFactory.create(username="charlie")
    for user in (alice, charlie):
        deposit_create(user_id=user.pk, amount=FUNDS)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    agent.refresh_from_db()
    return alice, charlie, agent


def submit(user, agent, n: int = 1, **fields) -> list[Task]:
    return [
        task_submit(requester=user, agent=agent, input=f"{i}", budget=BUDGET, **fields)
        for i in range(n)
    ]


def balance(user) -> int:
    return Account.objects.get(user=user).balance


# --- in flight ---------------------------------------------------------------------------


def test_a_requester_past_the_in_flight_limit_is_refused_with_nothing_held(people, settings):
    settings.MAX_TASKS_IN_FLIGHT = 3
    alice, charlie, agent = people
    held = submit(alice, agent, 3)
    before = (balance(alice), Task.objects.count(), Escrow.objects.count())
    with pytest.raises(TooManyTasks) as refused:
        submit(alice, agent)
    assert refused.value.status == 429 and refused.value.code == "too_many_tasks"
    assert (balance(alice), Task.objects.count(), Escrow.objects.count()) == before
    submit(charlie, agent)  # another requester's limit is their own
    task_cancel(task=held[0])  # one finishes: room for one more
    submit(alice, agent)
    with pytest.raises(TooManyTasks):
        submit(alice, agent)


def test_the_api_says_too_many_tasks_with_retry_after(people, settings):
    settings.MAX_TASKS_IN_FLIGHT = 1
    alice, _, _ = people
    client = APIClient()
    client.force_authenticate(alice)
    body = {"agent": "echo", "input": "hi", "budget": BUDGET}
    assert client.post("/api/v1/tasks/", body, format="json").status_code == 201
    response = client.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_tasks"
    assert response["Retry-After"] == "5"
    assert Task.objects.filter(requester=alice).count() == 1


def test_running_tasks_count_and_finished_ones_do_not(people, settings):
    settings.MAX_TASKS_IN_FLIGHT = 2
    alice, _, agent = people
    first, second = submit(alice, agent, 2)
    assert task_claim(task_id=first.pk) is not None  # running still counts
    with pytest.raises(TooManyTasks):
        submit(alice, agent)
    task_cancel(task=second)  # finished: no longer in flight
    submit(alice, agent)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("payment", ["escrow", "channel"])
def test_concurrent_submissions_never_overshoot_the_limit(settings, payment):
    """Twelve submissions at once from one requester, limit 5: exactly 5 get in."""
    settings.MAX_TASKS_IN_FLIGHT = 5
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    agent.refresh_from_db()
    vouchers: list[dict] = [{} for _ in range(12)]
    if payment == "channel":
        # A channel each: the submissions share nothing but their requester.
        key_register(user_id=alice.pk, public_key=public(KEY))
        channels = [
            channel_open(
                requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=BUDGET
            )
            for _ in range(12)
        ]
        vouchers = [
            {"payment": "channel", "channel": str(c.pk), "voucher": sign(c.pk, 1, BUDGET)}
            for c in channels
        ]
    outcomes: list[str] = []
    start = threading.Barrier(12)

    def one(i: int) -> None:
        start.wait()
        try:
            task_submit(requester=alice, agent=agent, input=str(i), budget=BUDGET, **vouchers[i])
            outcomes.append("accepted")
        except TooManyTasks:
            outcomes.append("too_many")
        except Exception as exc:  # a voucher that lost its race to a later nonce, say
            outcomes.append(type(exc).__name__)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    in_flight = Task.objects.filter(requester=alice, status__in=Task.IN_FLIGHT_STATUSES).count()
    assert in_flight == outcomes.count("accepted") <= 5
    assert sorted(outcomes) == ["accepted"] * 5 + ["too_many"] * 7
    if payment == "escrow":
        assert balance(alice) == FUNDS - 5 * BUDGET


# --- fair share ----------------------------------------------------------------------------


def test_workers_take_a_newcomer_ahead_of_a_backlog_and_interleave_requesters(people):
    alice, charlie, agent = people
    backlog = submit(alice, agent, 6)
    newcomer = submit(charlie, agent, 2)
    order = []
    while (claim := task_claim()) is not None:
        order.append(claim[0].pk)
    alice_ids, charlie_ids = [t.pk for t in backlog], [t.pk for t in newcomer]
    # Tags: alice 0…5; charlie's first gets the lowest queued tag (0) and the second 1, so
    # they run second and fourth, not after the whole backlog.
    assert order == [
        alice_ids[0],
        charlie_ids[0],
        alice_ids[1],
        charlie_ids[1],
        *alice_ids[2:],
    ]


def claimed() -> Task:
    claim = task_claim()
    assert claim is not None
    return claim[0]


def test_a_requeued_task_keeps_its_turn(people):
    alice, charlie, agent = people
    first, *_ = submit(alice, agent, 3)
    late = submit(charlie, agent)[0]
    assert claimed().pk == first.pk
    # Its worker is lost; recovery puts it back: it goes before charlie's.
    Task.objects.filter(pk=first.pk).update(status="queued", lease_expires_at=None)
    assert claimed().pk == first.pk
    assert claimed().pk == late.pk


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_requesters_backlog_of_ten_thousand_delays_anothers_task_by_a_few_task_times(
    settings, capsys
):
    settings.MAX_TASKS_IN_FLIGHT = BACKLOG
    alice, charlie = UserFactory.create(username="alice"), UserFactory.create(username="charlie")
    bob = UserFactory.create(username="bob")
    for user in (alice, charlie):
        deposit_create(user_id=user.pk, amount=FUNDS)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    agent.refresh_from_db()
    clock = time.monotonic()
    backlog = [  # in batches of 100, as POST /api/v1/tasks/batch/ submits them
        task.pk
        for start in range(0, BACKLOG, MAX_BATCH)
        for task in tasks_submit(
            requester=alice,
            submissions=[
                {"agent": agent, "input": str(i), "budget": BUDGET}
                for i in range(start, start + MAX_BATCH)
            ],
        )
    ]
    queued_in = time.monotonic() - clock
    assert len(backlog) == BACKLOG
    with Cluster(workers=2, MAX_TASKS_IN_FLIGHT=str(BACKLOG)) as cluster:
        wait_for(
            lambda: Task.objects.filter(requester=alice, status="succeeded").count() >= 50,
            timeout=60,
            message="the backlog to be under way",
            cluster=cluster,
        )
        [single] = submit(charlie, agent)
        wait_for(
            lambda: Task.objects.filter(pk=single.pk, status="succeeded").exists(),
            timeout=60,
            message="the newcomer's task to run",
            cluster=cluster,
        )
    single.refresh_from_db()
    assert single.started_at is not None and single.queued_at is not None
    waited = (single.started_at - single.queued_at).total_seconds()
    ran = Task.objects.filter(requester=alice, status="succeeded")
    longest = max(
        (t.finished_at - t.started_at).total_seconds()
        for t in ran
        if t.finished_at is not None and t.started_at is not None
    )
    left = Task.objects.filter(pk__in=backlog, status="queued").count()
    with capsys.disabled():
        print(
            f"\n  fair share: {BACKLOG:,} tasks queued in {queued_in:.1f}s; the newcomer waited "
            f"{waited * 1000:.0f} ms with {left} of the backlog still queued; the longest "
            f"backlog task took {longest * 1000:.0f} ms; bound {4 * longest + 1:.2f} s"
        )
    assert left > 0  # it did not simply wait for the backlog to drain
    assert waited <= 4 * longest + 1
