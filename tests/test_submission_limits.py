"""How fast, and how much, one requester may submit (SPEC §23): a rate per user and per key
in the shared cache, and the in-flight limit, both shown clearly on the task form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from escrow.services import deposit_create
from marketplace.apikeys.lifecycle import api_key_create
from marketplace.binaries import binary_upload
from marketplace.models import Task
from tests.factories import AgentFactory, UserFactory
from tests.workers import database_url

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "agents" / "dist" / "echo.wasm"
BODY = {"agent": "echo", "input": "hi", "budget": 10_000}


@pytest.fixture
def world(db):
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    return alice


def api(user, key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    else:
        client.force_authenticate(user)
    return client


def test_submissions_past_the_rate_are_refused_with_retry_after(world, settings):
    settings.TASK_SUBMIT_RATE = "3/minute"
    client = api(world)
    assert [client.post("/api/v1/tasks/", BODY).status_code for _ in range(3)] == [201] * 3
    refused = client.post("/api/v1/tasks/", BODY)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Task.objects.count() == 3
    assert client.get("/api/v1/tasks/").status_code == 200  # reading is not submitting


def test_an_api_key_counts_against_its_own_rate_and_its_users(world, settings):
    settings.TASK_SUBMIT_RATE = "2/minute"
    _, first = api_key_create(user=world, name="first", scopes=["tasks:write"])
    _, second = api_key_create(user=world, name="second", scopes=["tasks:write"])
    by_first = api(world, first)
    assert [by_first.post("/api/v1/tasks/", BODY).status_code for _ in range(3)] == [
        201,
        201,
        429,
    ]
    # The user's own rate is spent too: another key of theirs gets no more.
    assert api(world, second).post("/api/v1/tasks/", BODY).status_code == 429


def form(key: str) -> dict[str, str]:
    return {
        "agent": "echo",
        "input": "hi",
        "budget": "0.01",
        "idempotency_key": f"task-form-key-{key:0>10}",
    }


def test_the_task_form_says_when_to_try_again(world, settings):
    settings.TASK_SUBMIT_RATE = "1/minute"
    page = Client()
    page.force_login(world)
    page.post(reverse("task-new"), form("first"))
    body = page.post(reverse("task-new"), form("second")).content.decode()
    assert "You have submitted as many tasks as allowed for now (1/minute)" in body
    assert "Try again in" in body
    assert Task.objects.count() == 1


def test_the_task_form_explains_the_in_flight_limit(world, settings):
    settings.MAX_TASKS_IN_FLIGHT = 1
    page = Client()
    page.force_login(world)
    page.post(reverse("task-new"), form("first"))
    body = page.post(reverse("task-new"), form("second")).content.decode()
    assert "You already have 1 tasks pending, queued or running" in body
    assert Task.objects.count() == 1


SUBMIT = """
import json, os
from django.contrib.auth.models import User
from rest_framework.test import APIClient
client = APIClient(HTTP_HOST="localhost")
client.force_authenticate(User.objects.get(username="alice"))
body = {"agent": "echo", "input": "hi", "budget": 10000}
print(json.dumps([client.post("/api/v1/tasks/", body).status_code for _ in range(2)]))
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_rate_holds_across_two_processes_sharing_the_cache(settings):
    settings.TASK_SUBMIT_RATE = "3/minute"
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    here = [api(alice).post("/api/v1/tasks/", BODY).status_code for _ in range(2)]
    other = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SUBMIT],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "TASK_SUBMIT_RATE": "3/minute",
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    there = json.loads(other.stdout.strip().splitlines()[-1])
    assert (here, there) == ([201, 201], [201, 429])
    assert Task.objects.count() == 3
