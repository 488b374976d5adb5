"""Submitting, listing, reading and cancelling tasks; receipts and their verification."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from escrow.models import Escrow, Transfer
from execution.engine.receipts import public_key_info, receipt_verify
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, IdempotencyRecord, Task
from tests.factories import held_for

from .conftest import balance, error, make_agent

TASKS = "/api/v1/tasks/"
VERIFY = "/api/v1/receipts/verify/"

pytestmark = pytest.mark.django_db


def submit(client, key: str | None = None, **body):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(
        TASKS, {"agent": "echo", "input": "hello", "budget": 250_000, **body}, **headers
    )


def settle(task_id, execution: Execution) -> Task:
    claim = task_claim(task_id=task_id)
    assert claim is not None
    assert task_settle(task_id=task_id, attempt=claim[1], execution=execution)
    return Task.objects.get(pk=task_id)


def nothing_moved(user, expected_balance: int) -> None:
    assert (Task.objects.count(), Escrow.objects.count()) == (0, 0)
    assert Transfer.objects.exclude(kind="deposit").count() == 0
    assert balance(user) == expected_balance


# --- submit ---------------------------------------------------------------------------


def test_a_submission_holds_the_budget_in_escrow_and_queues_the_task(as_alice, funded_alice, echo):
    response = submit(as_alice, fuel_limit=5_000_000, min_reputation="40.5")

    assert response.status_code == 201
    task = Task.objects.get()
    escrow = Escrow.objects.get(task=task)
    assert response.json() == {
        "id": str(task.pk),
        "status": "queued",
        "agent": "echo",
        "version": echo.current_binary.version,
        "input": "hello",
        "budget": 250_000,
        "cost": None,
        "fee": None,
        "refund": None,
        "failure_reason": None,
        "failure_detail": "",
        "result": None,
        "escrow": {"id": escrow.pk, "status": "funded"},
        "payment": "escrow",
        "fuel_limit": 5_000_000,
        "memory_limit_mb": 64,
        "timeout_ms": 10_000,
        "min_reputation": "40.5000",
        "output_schema": None,
        "attempts": 0,
        "created_at": response.json()["created_at"],
        "started_at": None,
        "finished_at": None,
        "deadline_at": None,
        "evaluation": None,
    }
    assert (task.requester, task.agent, task.binary_id) == (
        funded_alice,
        echo,
        echo.current_binary_id,
    )
    assert escrow.amount == 250_000
    assert balance(funded_alice) == 10_000_000 - 250_000


def test_a_submission_beyond_the_balance_is_402(as_alice, alice, echo):
    response = submit(as_alice)

    assert error(response) == (402, "insufficient_funds")
    nothing_moved(alice, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "nope"}, "agent"),
        ({"agent": None}, "agent"),
        ({"budget": 0}, "budget"),
        ({"budget": "250000"}, "budget"),
        ({"budget": 2.5e5}, "budget"),
        ({"budget": 2**63}, "budget"),
        ({"fuel_limit": 10**11}, "fuel_limit"),
        ({"memory_limit_mb": 0}, "memory_limit_mb"),
        ({"timeout_ms": 60_001}, "timeout_ms"),
        ({"min_reputation": "101"}, "min_reputation"),
        ({"min_reputation": "NaN"}, "min_reputation"),
        ({"output_schema": {"type": "nonsense"}}, "output_schema"),
        ({"output_schema": "{}"}, "output_schema"),
        ({"payment": "cash"}, "payment"),
    ],
)
def test_a_submission_is_validated_before_anything_moves(as_alice, funded_alice, echo, body, field):
    response = submit(as_alice, **body)

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == [field]
    nothing_moved(funded_alice, 10_000_000)


def test_the_agents_rules_come_back_as_their_own_codes(as_alice, funded_alice, echo, bob):
    assert error(submit(as_alice, budget=999)) == (400, "budget_below_base_fee")
    missing = submit(as_alice, payment="channel")
    assert error(missing) == (400, "validation_error")
    assert set(missing.json()["error"]["fields"]) == {"channel", "voucher"}
    make_agent(bob, slug="bare", with_binary=False)
    assert error(submit(as_alice, agent="bare")) == (409, "agent_has_no_binary")
    Agent.objects.filter(pk=echo.pk).update(status="suspended")
    assert error(submit(as_alice)) == (409, "agent_inactive")
    nothing_moved(funded_alice, 10_000_000)


def test_an_input_over_the_limit_is_413(as_alice, funded_alice, echo, settings):
    settings.TASK_MAX_INPUT_BYTES = 10

    assert error(submit(as_alice, input="é" * 6)) == (413, "input_too_large")
    assert submit(as_alice, input="é" * 5).status_code == 201


def test_a_resubmission_with_its_key_returns_the_first_task(as_alice, funded_alice, echo):
    first = submit(as_alice, key="t-1")
    again = submit(as_alice, key="t-1")
    other = submit(as_alice, budget=250_001, key="t-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert error(other) == (409, "idempotency_conflict")
    assert Task.objects.count() == 1
    assert balance(funded_alice) == 10_000_000 - 250_000


# --- read ---------------------------------------------------------------------------


def test_requesters_list_only_their_own_tasks_filtered_by_status_and_agent(
    as_alice, funded_alice, as_charlie, charlie, echo, bob
):
    make_agent(bob, slug="other")
    queued = submit(as_alice).json()["id"]
    cancelled = submit(as_alice).json()["id"]
    on_other = submit(as_alice, agent="other").json()["id"]
    as_alice.post(f"{TASKS}{cancelled}/cancel/")

    def ids(**query) -> list[str]:
        response = as_alice.get(TASKS, query)
        assert response.status_code == 200
        return [task["id"] for task in response.json()["results"]]

    assert ids() == [on_other, cancelled, queued]
    assert ids(ordering="created_at") == [queued, cancelled, on_other]
    assert ids(status="cancelled") == [cancelled]
    assert ids(agent="echo") == [cancelled, queued]
    assert ids(agent="echo", status="queued") == [queued]
    assert as_charlie.get(TASKS).json()["count"] == 0
    assert error(as_alice.get(TASKS, {"status": "lost"})) == (400, "validation_error")


def test_another_users_task_is_as_absent_as_a_missing_one(as_alice, funded_alice, as_charlie, echo):
    task_id = submit(as_alice).json()["id"]

    assert as_alice.get(f"{TASKS}{task_id}/").status_code == 200
    assert error(as_charlie.get(f"{TASKS}{task_id}/")) == (404, "task_not_found")
    missing = "00000000-0000-4000-8000-000000000000"
    assert error(as_charlie.get(f"{TASKS}{missing}/")) == (404, "task_not_found")
    assert error(as_charlie.get(f"{TASKS}not-a-uuid/")) == (404, "not_found")


def test_a_settled_task_shows_its_result_and_money(as_alice, funded_alice, echo, bob):
    task_id = submit(as_alice, fuel_limit=1_000_000).json()["id"]
    settle(
        task_id,
        Execution(
            exit_code=0,
            stdout=b"caf\xc3\xa9 \xff",
            stderr=b"note",
            fuel_used=123_457,
            fuel_limit=1_000_000,
            elapsed_ms=12,
        ),
    )

    body = as_alice.get(f"{TASKS}{task_id}/").json()

    # cost = 1_000 + ceil(123_457 × 2_000 / 1e6) = 1_247; fee = 5 % → 62
    assert (body["status"], body["cost"], body["fee"], body["refund"]) == (
        "succeeded",
        1_247,
        62,
        250_000 - 1_247,
    )
    assert body["result"] == {
        "exit_code": 0,
        "output": "café \ufffd",
        "stderr": "note",
        "fuel_used": 123_457,
        "elapsed_ms": 12,
        "output_sha256": hashlib.sha256(b"caf\xc3\xa9 \xff").hexdigest(),
    }
    assert (body["failure_reason"], body["escrow"]["status"]) == (None, "released")
    assert balance(funded_alice) == 10_000_000 - 1_247
    assert (balance(bob), held_for(bob)) == (0, 1_247 - 62)  # the owner's share is held


def test_a_failed_task_shows_why(as_alice, funded_alice, echo):
    task_id = submit(as_alice).json()["id"]
    settle(task_id, Execution(reason="trap", exit_code=None, stderr=b"boom", elapsed_ms=3))

    body = as_alice.get(f"{TASKS}{task_id}/").json()

    assert (body["status"], body["failure_reason"], body["cost"], body["refund"]) == (
        "failed",
        "trap",
        0,
        250_000,
    )
    assert body["result"]["exit_code"] is None
    assert body["result"]["stderr"] == "boom"
    assert body["escrow"]["status"] == "refunded"
    assert balance(funded_alice) == 10_000_000


# --- cancel ---------------------------------------------------------------------------


def test_cancelling_a_queued_task_refunds_it(as_alice, funded_alice, echo):
    task_id = submit(as_alice).json()["id"]

    response = as_alice.post(f"{TASKS}{task_id}/cancel/")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["cost"], body["fee"], body["refund"]) == (
        "cancelled",
        0,
        0,
        250_000,
    )
    assert body["escrow"]["status"] == "refunded"
    assert balance(funded_alice) == 10_000_000


def test_only_a_queued_task_can_be_cancelled(as_alice, funded_alice, echo):
    task_id = submit(as_alice).json()["id"]
    as_alice.post(f"{TASKS}{task_id}/cancel/")

    assert error(as_alice.post(f"{TASKS}{task_id}/cancel/")) == (409, "task_state_conflict")
    running = submit(as_alice).json()["id"]
    task_claim(task_id=running)
    assert error(as_alice.post(f"{TASKS}{running}/cancel/")) == (409, "task_state_conflict")
    assert Task.objects.get(pk=running).status == "running"
    assert balance(funded_alice) == 10_000_000 - 250_000


def test_nobody_else_can_cancel_a_task(as_alice, funded_alice, as_charlie, echo):
    task_id = submit(as_alice).json()["id"]

    assert error(as_charlie.post(f"{TASKS}{task_id}/cancel/")) == (404, "task_not_found")
    assert Task.objects.get(pk=task_id).status == "queued"
    assert balance(funded_alice) == 10_000_000 - 250_000


# --- receipts ---------------------------------------------------------------------------


def test_a_receipt_appears_when_the_task_settles_and_verifies(as_alice, funded_alice, echo, anon):
    task_id = submit(as_alice).json()["id"]
    assert error(as_alice.get(f"{TASKS}{task_id}/receipt/")) == (404, "receipt_not_ready")
    settle(task_id, Execution(exit_code=0, stdout=b"hi", fuel_used=10, fuel_limit=100))

    receipt = as_alice.get(f"{TASKS}{task_id}/receipt/").json()

    assert set(receipt) == {"payload", "signature", "key_id"}
    payload = json.loads(receipt["payload"])
    assert (payload["task_id"], payload["output_sha256"], payload["status"]) == (
        task_id,
        hashlib.sha256(b"hi").hexdigest(),
        "succeeded",
    )
    assert receipt_verify(receipt)
    assert anon.post(VERIFY, receipt).json() == {"valid": True}


def test_a_receipt_is_only_shown_to_the_requester(as_alice, funded_alice, as_charlie, echo):
    task_id = submit(as_alice).json()["id"]
    settle(task_id, Execution(exit_code=0, stdout=b"hi"))

    assert error(as_charlie.get(f"{TASKS}{task_id}/receipt/")) == (404, "task_not_found")


def test_the_public_key_is_published(anon):
    response = anon.get("/api/v1/receipts/public-key/")

    assert response.status_code == 200
    assert response.json() == public_key_info()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: {**r, "payload": r["payload"].replace('"succeeded"', '"failed"')},
        # Flip one bit of the signature's first byte: always a different signature.
        lambda r: {
            **r,
            "signature": base64.b64encode(
                bytes([base64.b64decode(r["signature"])[0] ^ 1])
                + base64.b64decode(r["signature"])[1:]
            ).decode(),
        },
        lambda r: {**r, "signature": "not base64!"},
        lambda r: {**r, "key_id": "0" * 16},
    ],
)
def test_an_altered_receipt_does_not_verify(anon, as_alice, funded_alice, echo, tamper):
    task_id = submit(as_alice).json()["id"]
    settle(task_id, Execution(exit_code=0, stdout=b"hi"))
    receipt = as_alice.get(f"{TASKS}{task_id}/receipt/").json()

    response = anon.post(VERIFY, tamper(receipt))

    assert (response.status_code, response.json()) == (200, {"valid": False})


@pytest.mark.parametrize(
    "body",
    [{}, {"payload": "{}", "signature": "x"}, {"payload": 1, "signature": "x", "key_id": "k"}, []],
)
def test_something_that_is_not_a_receipt_is_400(anon, body):
    assert error(anon.post(VERIFY, body)) == (400, "validation_error")


def test_no_idempotency_record_is_kept_for_requests_without_a_key(as_alice, funded_alice, echo):
    submit(as_alice)

    assert IdempotencyRecord.objects.count() == 0
