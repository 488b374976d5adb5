"""Synchronous runs (`Prefer: wait=N`, SPEC §19) through real qcluster workers on real
PostgreSQL: a fast agent is answered 201 with its final task, a slow one 202 after N
seconds, and the waiting request is woken by the settlement's NOTIFY instead of polling:
the statements it makes are counted and do not grow with the wait.

The API runs in this process (DRF's test client), so its listener thread is this
process's; bob owns the agents, alice submits."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from escrow.audit import ledger_audit
from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, IdempotencyRecord, Task
from marketplace.task_wait import listener_stop, task_wait
from tests import wasm_modules as wasm
from tests.api.conftest import client_for
from tests.factories import AgentFactory
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
TASKS = "/api/v1/tasks/"
FUNDS = 50_000_000
# A spinning agent burns its fuel at about 1e9 a second: with all the fuel a task may have,
# it runs until its timeout.
SPIN_FUEL = 10_000_000_000


@pytest.fixture(autouse=True)
def _no_listener_left():
    yield
    listener_stop()  # its connection would keep the test database from being dropped


def agent_with(owner: Any, slug: str, code: bytes, **fields: Any) -> Agent:
    fields.setdefault("base_fee", 1_000)
    fields.setdefault("fuel_price", 1_000)
    agent = AgentFactory.create(owner=owner, slug=slug, **fields)
    binary_upload(agent=agent, data=code)
    agent.refresh_from_db()
    return agent


@pytest.fixture
def alice_client(alice, bob) -> APIClient:
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent_with(bob, "echo", ECHO.read_bytes())
    agent_with(bob, "spin", wasm.SPIN, fuel_price=1)
    return client_for(alice)


def post(client: APIClient, prefer: str | None = None, key: str | None = None, **body: Any):
    headers: dict[str, Any] = {}
    if prefer is not None:
        headers["HTTP_PREFER"] = prefer
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    body = {"agent": "echo", "input": "hello", "budget": 100_000, **body}
    return client.post(TASKS, body, format="json", **headers)


def spin(client: APIClient, prefer: str | None = None, **body: Any):
    return post(client, prefer, agent="spin", fuel_limit=SPIN_FUEL, timeout_ms=3_000, **body)


def warm(client: APIClient, cluster: Cluster) -> None:
    """Wait for the cluster to be up and to have compiled echo: a first task, settled."""
    first = post(client).json()["id"]
    wait_for(
        lambda: Task.objects.filter(pk=first, status="succeeded").exists(),
        timeout=60,
        message="the cluster to run a first task",
        cluster=cluster,
    )


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_fast_agent_is_answered_201_with_its_final_task(alice_client):
    with Cluster() as cluster:
        warm(alice_client, cluster)
        latencies = []
        for n in range(20):
            response, seconds = timed(lambda n=n: post(alice_client, "wait=20", input=f"hi {n}"))
            assert response.status_code == 201, (response.content, cluster.output())
            latencies.append(seconds)
            body = response.json()
            assert body["status"] == "succeeded"
            assert body["result"]["output"] == f"hi {n}"
            assert response["Preference-Applied"] == "wait=20"
            assert body["cost"] is not None and body["refund"] == 100_000 - body["cost"]
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[int(0.95 * len(latencies)) - 1]
    print(
        f"\nPrefer: wait run of echo, submit to final answer: p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    assert p50 < 2.0
    assert ledger_audit().ok


def test_a_slow_agent_is_answered_202_after_the_wait_with_the_task_as_it_stands(alice_client):
    with Cluster() as cluster:
        plain = CaptureQueriesContext(connection)
        with plain:
            assert post(alice_client).status_code == 201
        waiting = CaptureQueriesContext(connection)
        with waiting:
            response, seconds = timed(lambda: spin(alice_client, "wait=2"))

        assert response.status_code == 202, (response.content, cluster.output())
        assert response["Preference-Applied"] == "wait=2"
        assert 2.0 <= seconds < 4.0
        assert response.json()["status"] in ("queued", "running")
        assert response.json()["result"] is None
        # The submission's statements plus the wait's: the mark (which reads the status) and
        # the final read; a submission without the wait makes the rest.
        extra = len(waiting) - len(plain)
        print(f"\nstatements: a submission {len(plain)}, with a 2 s wait {len(waiting)}")
        assert extra <= 3, [q["sql"][:120] for q in waiting.captured_queries]


def test_a_waiting_request_is_woken_by_the_settlement_and_makes_no_more_statements(
    alice_client,
):
    """A slow agent that fails on its timeout (3 s) within a wait of 20 s: the request is
    answered when the failure settles, having read the task three times in all."""
    with Cluster() as cluster:
        task_id = spin(alice_client).json()["id"]
        wait_for(
            lambda: Task.objects.filter(pk=task_id, status="running").exists(),
            timeout=30,
            message="the slow task to start",
            cluster=cluster,
        )
        looks = CaptureQueriesContext(connection)
        with looks:
            task, seconds = timed(lambda: task_wait(task_id, 20))

        assert task.status == "failed", cluster.output()
        assert task.failure_reason == "timeout"
        assert 1.0 < seconds < 6.0  # the rest of its 3 s run, not the 20 s wait
        print(f"\nwaited {seconds:.2f} s with {len(looks)} statements")
        # The mark, the read when woken, the final read: nothing in between.
        assert len(looks) <= 3, [q["sql"][:120] for q in looks.captured_queries]


def test_a_replay_answers_with_the_final_response_that_was_sent(alice_client):
    with Cluster() as cluster:
        warm(alice_client, cluster)
        first = post(alice_client, "wait=20", key="sync-final")
        assert first.status_code == 201
        assert first.json()["status"] == "succeeded"

        again, seconds = timed(lambda: post(alice_client, "wait=20", key="sync-final"))

    assert seconds < 2.0  # from the record: no second wait
    assert (again.status_code, again["Idempotent-Replayed"]) == (201, "true")
    assert again.json() == first.json()  # the final task, as the first answer sent it
    record = IdempotencyRecord.objects.get(key="sync-final")
    assert record.status_code == 201 and record.response_body is not None
    assert record.response_body["status"] == "succeeded"
    assert Task.objects.filter(idempotency_key="sync-final").count() == 1
