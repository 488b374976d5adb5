"""`POST /api/v1/tasks/batch/` (SPEC §20): up to 100 tasks, all or nothing, one
Idempotency-Key; an API key's caps counted exactly; the task at fault named. bob owns the
agent, alice submits. The ledger audit runs after every test (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ
from rest_framework.test import APIClient

from escrow.models import Escrow, Transfer
from escrow.services import deposit_create
from marketplace.apikey_models import ApiKeyCharge
from marketplace.apikeys import api_key_create
from marketplace.models import Task

from .conftest import balance, client_for, error, make_agent

BATCH = "/api/v1/tasks/batch/"
BUDGET = 100_000

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def funded(alice):
    deposit_create(user_id=alice.pk, amount=20_000_000)
    return alice


def tasks(n: int, **overrides: Any) -> list[dict[str, Any]]:
    return [
        {"agent": "echo", "input": f"task {i}", "budget": BUDGET, **overrides} for i in range(n)
    ]


def nothing_held(alice: Any, before: int) -> None:
    assert balance(alice) == before
    assert (Task.objects.count(), Escrow.objects.count(), OrmQ.objects.count()) == (0, 0, 0)
    assert not Transfer.objects.filter(kind="escrow_hold").exists()


def test_a_batch_holds_every_budget_and_answers_with_every_task(funded, bob):
    make_agent(bob, slug="echo")
    response = client_for(funded).post(BATCH, {"tasks": tasks(100)}, format="json")
    assert response.status_code == 201, response.content
    answered = response.json()["tasks"]
    assert [t["input"] for t in answered] == [f"task {i}" for i in range(100)]
    assert {(t["status"], t["escrow"]["status"]) for t in answered} == {("queued", "funded")}
    assert balance(funded) == 20_000_000 - 100 * BUDGET
    stored = Task.objects.filter(pk__in=[t["id"] for t in answered])
    assert stored.filter(status="queued").count() == 100
    assert Escrow.objects.filter(task__in=stored, status="funded", amount=BUDGET).count() == 100
    assert Transfer.objects.filter(kind="escrow_hold", task__in=stored).count() == 100
    assert OrmQ.objects.count() == 100  # one message per task
    # Each task took its turn in the fair share after the one before it.
    tags = list(stored.order_by("created_at", "fair_tag").values_list("fair_tag", flat=True))
    assert sorted(tags) == list(range(100))


def test_a_failing_50th_task_holds_nothing(funded, bob):
    make_agent(bob, slug="echo")
    body = tasks(100)
    body[49] = {"agent": "echo", "input": "short", "budget": 10}  # below the base fee
    response = client_for(funded).post(BATCH, {"tasks": body}, format="json")
    assert error(response) == (400, "budget_below_base_fee")
    failure = response.json()["error"]
    assert failure["fields"]["index"] == 49 and failure["message"].startswith("Task 49: ")
    nothing_held(funded, 20_000_000)

    body[49] = {"agent": "echo", "input": "short", "budget": "10"}  # not a JSON integer
    response = client_for(funded).post(BATCH, {"tasks": body}, format="json")
    assert error(response) == (400, "validation_error")
    assert response.json()["error"]["fields"]["index"] == 49
    assert "budget" in response.json()["error"]["fields"]
    nothing_held(funded, 20_000_000)


def test_a_batch_the_wallet_cannot_cover_holds_nothing(alice, bob):
    make_agent(bob, slug="echo")
    deposit_create(user_id=alice.pk, amount=50 * BUDGET - 1)  # one µCR short of 50 tasks
    response = client_for(alice).post(BATCH, {"tasks": tasks(50)}, format="json")
    assert error(response) == (402, "insufficient_funds")
    nothing_held(alice, 50 * BUDGET - 1)


def test_a_repeat_with_the_same_key_replays_the_batch_and_holds_nothing_more(funded, bob):
    make_agent(bob, slug="echo")
    client = client_for(funded)
    first = client.post(BATCH, {"tasks": tasks(3)}, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    again = client.post(BATCH, {"tasks": tasks(3)}, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Task.objects.count() == 3 and balance(funded) == 20_000_000 - 3 * BUDGET
    other = client.post(BATCH, {"tasks": tasks(2)}, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    assert error(other) == (409, "idempotency_conflict")
    keys = set(Task.objects.values_list("idempotency_key", flat=True))
    assert keys == {"b-1 0", "b-1 1", "b-1 2"}


def test_a_capped_key_that_covers_only_part_of_a_batch_holds_nothing(funded, bob):
    make_agent(bob, slug="echo")
    key, raw = api_key_create(
        user=funded, name="bot", scopes=["tasks:write"], limits={"daily": 10 * BUDGET - 1}
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.post(BATCH, {"tasks": tasks(10)}, format="json")
    assert error(response) == (402, "spend_limit_exceeded")
    assert response.json()["error"]["fields"]["limit"] == "daily"
    nothing_held(funded, 20_000_000)
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_total, ApiKeyCharge.objects.count()) == (0, 0, 0)
    # What the key can afford goes through, counted to the micro-credit.
    response = client.post(BATCH, {"tasks": tasks(9)}, format="json")
    assert response.status_code == 201, response.content
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_total) == (9 * BUDGET, 9 * BUDGET)
    assert ApiKeyCharge.objects.filter(amount=BUDGET).count() == 9


def test_a_key_s_per_task_limit_names_the_task_above_it(funded, bob):
    make_agent(bob, slug="echo")
    _, raw = api_key_create(
        user=funded, name="bot", scopes=["tasks:write"], limits={"per_task": BUDGET}
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = tasks(5)
    body[3]["budget"] = BUDGET + 1
    response = client.post(BATCH, {"tasks": body}, format="json")
    assert error(response) == (402, "spend_limit_exceeded")
    assert response.json()["error"]["fields"]["index"] == 3
    nothing_held(funded, 20_000_000)


def test_the_batch_counts_each_task_against_the_limit_of_tasks_in_flight(funded, bob, settings):
    make_agent(bob, slug="echo")
    settings.MAX_TASKS_IN_FLIGHT = 10
    client = client_for(funded)
    assert error(client.post(BATCH, {"tasks": tasks(11)}, format="json")) == (
        429,
        "too_many_tasks",
    )
    nothing_held(funded, 20_000_000)
    assert client.post(BATCH, {"tasks": tasks(10)}, format="json").status_code == 201


def test_a_batch_counts_each_task_against_the_submission_rate(funded, bob, settings):
    make_agent(bob, slug="echo")
    settings.TASK_SUBMIT_RATE = "12/minute"
    client = client_for(funded)
    assert client.post(BATCH, {"tasks": tasks(10)}, format="json").status_code == 201
    assert error(client.post(BATCH, {"tasks": tasks(3)}, format="json")) == (429, "throttled")
    assert client.post(BATCH, {"tasks": tasks(2)}, format="json").status_code == 201
    assert error(client.post("/api/v1/tasks/", tasks(1)[0], format="json")) == (429, "throttled")
    assert Task.objects.count() == 12


@pytest.mark.parametrize("body", [{}, {"tasks": []}, {"tasks": tasks(101)}, {"tasks": "x"}, []])
def test_a_body_that_is_not_a_batch_is_a_validation_error(funded, bob, body):
    make_agent(bob, slug="echo")
    response = client_for(funded).post(BATCH, body, format="json")
    assert error(response) == (400, "validation_error")
    nothing_held(funded, 20_000_000)


@pytest.mark.postgres
def test_a_batch_is_one_statement_after_reading_its_agent(funded, bob, settings):
    """Each agent read once, then one statement for every task, charge, escrow and hold."""
    settings.TASK_SUBMIT_RATE = "1000/minute"
    settings.MAX_TASKS_IN_FLIGHT = 1000
    make_agent(bob, slug="echo")
    client = client_for(funded)
    client.post(BATCH, {"tasks": tasks(2)}, format="json")  # warm the per-process caches
    with CaptureQueriesContext(connection) as captured:
        assert client.post(BATCH, {"tasks": tasks(100)}, format="json").status_code == 201
    statements = [q["sql"] for q in captured.captured_queries]
    writes = [sql for sql in statements if sql.startswith("WITH task_admitted")]
    assert len(writes) == 1
    assert sum('FROM "marketplace_agent"' in sql for sql in statements) == 1
