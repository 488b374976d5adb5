"""The OpenAPI schema: generated without warnings, and true to the live API.

schemathesis generates requests (valid and invalid) for every operation in the schema and
checks each answer: never a server error, and always the shape the schema documents for
that status (the error envelope included).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.services import task_submit
from marketplace.wsgi import application
from tests.factories import UserFactory

from .conftest import make_agent

SCHEMA_URL = "/api/v1/schema/?format=json"

schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, application)


def test_the_schema_generates_cleanly_and_validates(tmp_path: Path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))


def test_the_schema_is_served_with_the_error_envelope(anon, db):
    document = anon.get(SCHEMA_URL).json()

    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message", "fields"]
    task_post = document["paths"]["/api/v1/tasks/"]["post"]
    assert set(task_post["responses"]) == {
        *("201", "202", "400", "401", "402", "403", "409", "413", "415", "429")
    }
    assert task_post["responses"]["402"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert {p["name"] for p in task_post["parameters"]} == {"Idempotency-Key", "Prefer"}


@pytest.fixture
def _keep_the_test_connection():
    """Requests go through the real WSGI handler, which closes "old" connections when a
    request starts and ends; that would close the test's transaction on PostgreSQL.
    Django's own test client disconnects the same handler."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(db, _keep_the_test_connection) -> dict[str, str]:
    """alice, with money, her own agent (the schema's example slug) and tasks to read."""
    alice = UserFactory.create(username="alice")
    deposit_create(user_id=alice.pk, amount=10**9)
    echo = make_agent(alice, slug="echo")
    task_submit(requester=alice, agent=echo, input="queued", budget=100_000)
    settled = task_submit(requester=alice, agent=echo, input="settled", budget=100_000)
    claim = task_claim(task_id=settled.pk)
    assert claim is not None
    task_settle(
        task_id=settled.pk, attempt=claim[1], execution=Execution(exit_code=0, stdout=b"\xffok")
    )
    return {"Authorization": f"Token {Token.objects.create(user=alice).key}"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_api_keeps_the_promises_of_its_schema(case, credentials):
    case.call_and_validate(
        headers=credentials, checks=[not_a_server_error, response_schema_conformance]
    )
