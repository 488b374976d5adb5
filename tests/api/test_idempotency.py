"""Idempotency-Key on money-moving requests: repeats replay, reuse conflicts, one effect."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from escrow.models import Escrow, Transfer
from escrow.services import deposit_create
from marketplace.idempotency import CLAIM_TIMEOUT
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


@pytest.mark.django_db
def test_a_failed_request_leaves_no_claim_behind(as_alice, alice, echo):
    refused = as_alice.post(TASKS, {**TASK, "agent": "nobody"}, HTTP_IDEMPOTENCY_KEY="k")
    poor = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")

    assert error(refused)[0] == 400 and error(poor) == (402, "insufficient_funds")
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db
def test_a_request_still_being_answered_holds_its_key(as_alice, funded_alice, echo):
    first = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    # As if the first request were still running: claimed, not answered.
    IdempotencyRecord.objects.update(status_code=None, response_body=None)

    twin = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    other = as_alice.post(TASKS, {**TASK, "budget": 100_001}, HTTP_IDEMPOTENCY_KEY="k")

    assert first.status_code == 201
    assert error(twin) == (409, "idempotency_in_progress")
    assert error(other) == (409, "idempotency_conflict")
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_the_claim_of_a_request_that_died_lapses_and_its_repeat_gets_its_task(
    as_alice, funded_alice, echo
):
    """The request committed its task, then its process died before answering."""
    first = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    long_ago = timezone.now() - CLAIM_TIMEOUT - timedelta(seconds=1)
    IdempotencyRecord.objects.update(status_code=None, response_body=None, created_at=long_ago)

    again = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    replayed = as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")

    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1
    assert balance(funded_alice) == 10_000_000 - 100_000


@pytest.mark.django_db
def test_a_lapsed_claim_is_not_taken_over_by_another_body(as_alice, funded_alice, echo):
    as_alice.post(TASKS, TASK, HTTP_IDEMPOTENCY_KEY="k")
    long_ago = timezone.now() - CLAIM_TIMEOUT - timedelta(seconds=1)
    IdempotencyRecord.objects.update(status_code=None, response_body=None, created_at=long_ago)

    other = as_alice.post(TASKS, {**TASK, "fuel_limit": 5}, HTTP_IDEMPOTENCY_KEY="k")

    assert error(other) == (409, "idempotency_conflict")


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


def outcome(result: tuple[int, Any]) -> str:
    """201, or the error code of a refusal."""
    status, body = result
    return str(status) if status < 400 else body["error"]["code"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_deposits_with_one_key_make_one_deposit():
    alice = UserFactory.create(username="alice")
    client = client_for(alice)

    results = concurrently([post(client, DEPOSITS, {"amount": 5_000}, "same")] * 20)

    assert all(isinstance(r, tuple) for r in results), results
    # Each twin either waited for nothing (the replay) or was told to retry in a moment.
    assert {outcome(r) for r in results} <= {"201", "idempotency_in_progress"}
    transfer = Transfer.objects.get(kind="deposit")
    answers = [body for status, body in results if status == 201]
    # Equal as JSON (PostgreSQL's jsonb keeps the stored copy's keys in its own order).
    assert answers and all(
        body == {"transfer_id": transfer.pk, "amount": 5_000, "balance": 5_000} for body in answers
    )
    assert balance(alice) == 5_000
    assert IdempotencyRecord.objects.get().status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submissions_with_one_key_make_one_task():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    make_agent(bob, slug="echo")
    client = client_for(alice)

    results = concurrently([post(client, TASKS, TASK, "same")] * 20)

    assert all(isinstance(r, tuple) for r in results), results
    assert {outcome(r) for r in results} <= {"201", "idempotency_in_progress"}
    task = Task.objects.get()
    assert {body["id"] for status, body in results if status == 201} == {str(task.pk)}
    assert Escrow.objects.get(task=task).status == "funded"
    assert Transfer.objects.filter(kind="escrow_hold").count() == 1
    assert balance(alice) == 1_000_000 - 100_000
    assert IdempotencyRecord.objects.count() == 1


@pytest.fixture
def slow_submissions(monkeypatch):
    """Submissions that take a while, so that concurrent twins surely overlap."""
    from marketplace.api import tasks as tasks_api

    real = tasks_api.task_submit

    def slow(**kwargs: Any) -> Task:
        time.sleep(0.5)
        return real(**kwargs)

    monkeypatch.setattr(tasks_api, "task_submit", slow)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_of_two_concurrent_twins_one_does_the_work_and_the_other_is_told_to_retry(
    slow_submissions,
):
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    make_agent(bob, slug="echo")
    client = client_for(alice)

    results = concurrently([post(client, TASKS, TASK, "same")] * 2)
    retried = client.post(TASKS, TASK, format="json", HTTP_IDEMPOTENCY_KEY="same")

    assert sorted(outcome(r) for r in results) == ["201", "idempotency_in_progress"]
    created = next(body for status, body in results if status == 201)
    assert (retried.status_code, retried.headers["Idempotent-Replayed"]) == (201, "true")
    assert retried.json() == created
    assert Task.objects.count() == 1
    assert balance(alice) == 1_000_000 - 100_000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_reuses_of_a_key_with_two_bodies_let_exactly_one_through(slow_submissions):
    """The bodies differ only in fuel_limit, which the service's own key check does not
    compare: only the claim keeps one request's answer from being given to the other."""
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000)
    make_agent(bob, slug="echo")
    client = client_for(alice)
    bodies = [{**TASK, "fuel_limit": 1_000}, {**TASK, "fuel_limit": 2_000}]

    results = concurrently([post(client, TASKS, body, "same") for body in bodies * 5])

    assert all(isinstance(r, tuple) for r in results), results
    task = Task.objects.get()
    answered = [
        (body["fuel_limit"], result[1]["fuel_limit"])
        for result, body in zip(results, bodies * 5, strict=True)
        if result[0] == 201
    ]
    assert answered and all(sent == got == task.fuel_limit for sent, got in answered)
    assert {outcome(r) for r in results} <= {
        "201",
        "idempotency_in_progress",
        "idempotency_conflict",
    }
    assert balance(alice) == 1_000_000 - 100_000
