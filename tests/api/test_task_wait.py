"""`Prefer: wait=N` and `deadline_seconds` on POST /api/v1/tasks/ (SPEC §19), with no
worker: a task that nobody runs is answered 202 after N seconds. Real workers, the
settlement's wake-up and the statements a wait makes are in tests/test_sync_runs.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIRequestFactory

from marketplace.api.tasks import wait_preference
from marketplace.models import IdempotencyRecord, Task
from marketplace.task_wait import listener_stop, task_wait

from .conftest import balance, error

TASKS = "/api/v1/tasks/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_listener_left():
    yield
    listener_stop()  # its connection would keep the test database from being dropped


@pytest.fixture
def funded_alice(alice):
    from escrow.services import deposit_create

    deposit_create(user_id=alice.pk, amount=10_000_000)
    return alice


def submit(client, prefer: str | None = None, key: str | None = None, **body):
    headers = {}
    if prefer is not None:
        headers["HTTP_PREFER"] = prefer
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(
        TASKS,
        {"agent": "echo", "input": "hello", "budget": 250_000, **body},
        format="json",
        **headers,
    )


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("wait=5", 5),
        ("wait=0", 1),
        ("wait=-3", 1),
        ("wait=61", 60),
        ("wait=999999999999", 60),
        ('wait="7"', 7),
        ("respond-async, wait=12", 12),
        ("WAIT = 3; foo=bar", 3),
        ("handling=lenient", None),
        ("wait=soon", None),
        ("wait=1.5", None),
        ("", None),
    ],
)
def test_the_wait_preference_is_read_and_clamped_to_1_to_60(header, wait):
    request = APIRequestFactory().post(TASKS, HTTP_PREFER=header)
    assert wait_preference(request) == wait


def test_a_task_not_final_within_the_wait_is_answered_202_as_it_stands(
    as_alice, funded_alice, echo
):
    started = time.monotonic()
    response = submit(as_alice, prefer="wait=1")
    elapsed = time.monotonic() - started

    assert response.status_code == 202, response.content
    assert response["Preference-Applied"] == "wait=1"
    assert 1.0 <= elapsed < 5.0
    body = response.json()
    assert (body["status"], body["escrow"]["status"]) == ("queued", "funded")
    assert Task.objects.get().status == "queued"


def test_without_the_preference_a_submission_is_answered_201_at_once(as_alice, funded_alice, echo):
    response = submit(as_alice)
    assert response.status_code == 201
    assert "Preference-Applied" not in response


def test_a_replay_answers_with_the_first_response_as_it_was_sent(as_alice, funded_alice, echo):
    first = submit(as_alice, prefer="wait=1", key="sync-1")
    assert first.status_code == 202

    started = time.monotonic()
    again = submit(as_alice, prefer="wait=1", key="sync-1")

    assert time.monotonic() - started < 1.0  # answered from the record, no second wait
    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    record = IdempotencyRecord.objects.get(key="sync-1")
    assert (record.status_code, record.response_body) == (202, first.json())
    assert Task.objects.count() == 1


def test_beyond_the_waiters_a_process_allows_the_answer_comes_at_once(
    as_alice, funded_alice, echo, settings
):
    settings.TASK_WAITERS_PER_PROCESS = 0
    started = time.monotonic()
    response = submit(as_alice, prefer="wait=30")

    assert time.monotonic() - started < 2.0
    assert response.status_code == 202
    assert "Preference-Applied" not in response  # the preference was not applied
    assert response.json()["status"] == "queued"


def test_waiting_for_an_unknown_task_raises(db):
    with pytest.raises(Task.DoesNotExist):
        task_wait("00000000-0000-0000-0000-000000000000", 1)


# --- deadlines -----------------------------------------------------------------------------


def test_a_deadline_is_stored_and_shown(as_alice, funded_alice, echo):
    before = timezone.now()
    response = submit(as_alice, deadline_seconds=120)

    assert response.status_code == 201, response.content
    shown = parse_datetime(response.json()["deadline_at"])
    assert shown is not None
    assert before + timedelta(seconds=120) <= shown <= timezone.now() + timedelta(seconds=120)
    assert Task.objects.get().deadline_at == shown
    read = as_alice.get(f"{TASKS}{response.json()['id']}/").json()
    assert read["deadline_at"] == response.json()["deadline_at"]


@pytest.mark.parametrize("seconds", [0, -5, 86_401, 1.5, "60", True, None])
def test_a_deadline_out_of_range_is_400_and_nothing_moves(as_alice, funded_alice, echo, seconds):
    response = submit(as_alice, deadline_seconds=seconds)

    assert error(response) == (400, "validation_error")
    assert "deadline_seconds" in response.json()["error"]["fields"]
    assert Task.objects.count() == 0
    assert balance(funded_alice) == 10_000_000


def test_the_longest_and_shortest_deadlines_are_accepted(as_alice, funded_alice, echo):
    assert submit(as_alice, deadline_seconds=1).status_code == 201
    assert submit(as_alice, deadline_seconds=86_400).status_code == 201


def test_the_listener_can_bypass_a_pooler_with_its_own_url(settings):
    from marketplace.task_wait import _listen_params

    settings.LISTEN_DATABASE_URL = (
        "postgresql://ex:s%40cret@db.internal:5433/exchange?sslmode=require"
    )
    assert _listen_params() == {
        "dbname": "exchange",
        "user": "ex",
        "password": "s@cret",
        "host": "db.internal",
        "port": "5433",
        "sslmode": "require",
    }
