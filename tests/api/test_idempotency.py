"""Idempotency-Key on money-moving requests: repeats replay, reuse conflicts, one effect."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from escrow.models import Escrow, Transfer
from escrow.services import deposit_create
from marketplace.models import IdempotencyRecord, Task
from tests.factories import UserFactory

from .conftest import balance, client_for, error, make_agent

DEPOSITS = "/api/v1/wallet/deposits/"
TASKS = "/api/v1/tasks/"
TASK = {"agent": "echo", "input": "hello", "budget": 100_000}


@pytest.mark.django_db
def test_keys_are_per_user(as_alice, alice, as_bob, bob):
    first = as_alice.post(DEPOSITS, {"amount": 100}, HTTP_IDEMPOTENCY_KEY="k")
    second = as_bob.post(DEPOSITS, {"amount": 200}, HTTP_IDEMPOTENCY_KEY="k")

    assert (first.status_code, second.status_code) == (201, 201)
    assert (balance(alice), balance(bob)) == (100, 200)
    assert IdempotencyRecord.objects.count() == 2


@pytest.mark.django_db
def test_a_key_used_for_a_deposit_cannot_submit_a_task(as_alice, funded_alice, echo):
    as_alice.post(DEPOSITS, {"amount": 100}, HTTP_IDEMPOTENCY_KEY="k")

    response = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")

    assert error(response) == (409, "idempotency_conflict")
    assert Task.objects.count() == 0


@pytest.mark.django_db
def test_the_same_body_in_another_key_order_is_the_same_request(as_alice, funded_alice, echo):
    first = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    reordered = dict(reversed(list(TASK.items())))

    again = as_alice.post(TASKS, reordered, HTTP_IDEMPOTENCY_KEY="k")

    assert again.json() == first.json()
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_a_failed_request_is_not_remembered_so_a_retry_can_succeed(as_alice, alice, echo):
    refused = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    deposit_create(user_id=alice.pk, amount=100_000)
    retried = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")

    assert error(refused) == (402, "insufficient_funds")
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert Task.objects.get().idempotency_key == "k"
    assert balance(alice) == 0


@pytest.mark.django_db
def test_a_repeat_is_answered_even_after_the_task_moved_on(as_alice, funded_alice, echo):
    first = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    as_alice.post(f"{TASKS}{first.json()['id']}/cancel/")

    again = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")

    assert (again.status_code, again.json()["status"]) == (201, "queued")
    assert as_alice.get(f"{TASKS}{first.json()['id']}/").json()["status"] == "cancelled"
    assert Task.objects.count() == 1
    assert balance(funded_alice) == 10_000_000


@pytest.mark.django_db
def test_a_lost_record_still_cannot_pay_twice(as_alice, funded_alice, echo):
    """If the response was never stored, the service's own key check still holds."""
    first = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    IdempotencyRecord.objects.all().delete()

    again = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    other = as_alice.post(TASKS, {**TASK, "budget": 100_001}, HTTP_IDEMPOTENCY_KEY="k")

    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
    assert error(other) == (409, "idempotency_conflict")
    assert Task.objects.count() == 1
    assert balance(funded_alice) == 10_000_000 - 100_000


# --- concurrency (real PostgreSQL, real threads) ---------------------------------------------


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at once; each closes its own connection."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except Exception as exc:  # reported through the results, checked by the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def post(client: APIClient, path: str, body: dict[str, Any], key: str) -> Callable[[], Any]:
    def call() -> tuple[int, Any]:
        response = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        return response.status_code, response.json()

    return call


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_deposits_with_one_key_make_one_deposit():
    alice = UserFactory.create(username="alice")
    client = client_for(alice)

    results = concurrently([post(client, DEPOSITS, {"amount": 5_000}, "same")] * 20)

    assert all(isinstance(r, tuple) for r in results), results
    assert {status for status, _ in results} == {201}
    # Equal as JSON (PostgreSQL's jsonb keeps the stored copy's keys in its own order).
    assert all(body == results[0][1] for _, body in results)
    transfer = Transfer.objects.get(kind="deposit")
    assert results[0][1] == {"transfer_id": transfer.pk, "amount": 5_000, "balance": 5_000}
    assert balance(alice) == 5_000
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submissions_with_one_key_make_one_task():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    make_agent(bob, slug="echo")
    client = client_for(alice)

    results = concurrently([post(client, TASKS, TASK, "same")] * 20)

    assert all(isinstance(r, tuple) for r in results), results
    assert {status for status, _ in results} == {201}
    task = Task.objects.get()
    assert {body["id"] for _, body in results} == {str(task.pk)}
    assert Escrow.objects.get(task=task).status == "funded"
    assert Transfer.objects.filter(kind="escrow_hold").count() == 1
    assert balance(alice) == 1_000_000 - 100_000
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_reuses_of_a_key_with_two_bodies_let_exactly_one_through():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    make_agent(bob, slug="echo")
    client = client_for(alice)
    calls = [
        post(client, TASKS, TASK, "same"),
        post(client, TASKS, {**TASK, "budget": 200_000}, "same"),
    ]

    results = concurrently(calls * 10)

    assert all(isinstance(r, tuple) for r in results), results
    task = Task.objects.get()
    by_budget = Counter(
        (budget, status)
        for (status, _), budget in zip(results, [100_000, 200_000] * 10, strict=True)
    )
    assert by_budget == {(task.budget, 201): 10, (300_000 - task.budget, 409): 10}
    assert balance(alice) == 1_000_000 - task.budget
