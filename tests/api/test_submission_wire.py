"""The submission's wire format without a serializer built per request
(marketplace.api.submission): the same validated data and errors as `TaskSubmitSerializer`,
the same body as `TaskSerializer`, and no serializer fields built by a submission."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from rest_framework import serializers

from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.api.common import valid
from marketplace.api.serializers.tasks import TaskSerializer, TaskSubmitSerializer
from marketplace.api.submission import submission_data, task_body
from marketplace.models import Task
from marketplace.services import task_submit

from .conftest import client_for, make_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def echo(alice, bob):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    return make_agent(bob, slug="echo")


BODIES: list[dict[str, Any]] = [
    {"agent": "echo", "input": "hi", "budget": 100_000},
    {"agent": "echo", "input": None, "budget": 100_000, "fuel_limit": 5, "timeout_ms": 9},
    {"agent": "echo", "input": "x", "budget": 1, "min_reputation": "12.5", "ignored": 1},
    {"agent": "echo", "input": "x", "budget": 1, "min_reputation": 7, "memory_limit_mb": 3},
    {"agent": "echo", "input": "x", "budget": 1, "output_schema": {"type": "string"}},
    {"agent": "echo", "input": "x", "budget": 1, "deadline_seconds": 60, "version": 1},
    {"agent": "echo", "input": "x", "budget": 1, "payment": "escrow"},
    {"agent": " echo ", "input": "x", "budget": 1},  # trimmed, as a CharField does
]
WRONG: list[Any] = [
    [],
    {"input": "hi", "budget": 1},
    {"agent": "echo", "budget": 1},
    {"agent": "nobody", "input": "hi", "budget": 1},
    {"agent": "echo", "input": "hi", "budget": "1"},
    {"agent": "echo", "input": "hi", "budget": 0},
    {"agent": "echo", "input": "hi", "budget": True},
    {"agent": "echo", "input": "hi", "budget": 1, "version": None},
    {"agent": "echo", "input": "hi", "budget": 1, "min_reputation": "101"},
    {"agent": "echo", "input": "hi", "budget": 1, "payment": "card"},
    {"agent": "echo", "input": "hi", "budget": 1, "channel": "not-a-uuid"},
    {"agent": "echo", "input": "hi", "budget": 1, "payment": "channel"},
    {"agent": "echo", "input": "hi", "budget": 1, "voucher": {"nonce": 1}},
    {"agent": "echo", "input": "hi", "budget": 1, "output_schema": [1]},
]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.pk if hasattr(v, "pk") else v) for k, v in data.items()}


@pytest.mark.parametrize("body", BODIES)
def test_a_valid_body_gives_what_the_serializer_gives(alice, echo, body):
    expected = valid(TaskSubmitSerializer, body, context={"requester": alice})
    got = submission_data(body, requester=alice)
    assert _plain(got) == _plain(dict(expected))
    assert got["agent"].wallets_for == alice.pk  # the agent read with its wallets
    if "min_reputation" in body:
        assert isinstance(got["min_reputation"], Decimal)


@pytest.mark.parametrize("body", WRONG)
def test_a_wrong_body_gets_the_serializer_s_own_errors(alice, echo, body):
    with pytest.raises(serializers.ValidationError) as expected:
        valid(TaskSubmitSerializer, body, context={"requester": alice})
    with pytest.raises(serializers.ValidationError) as got:
        submission_data(body, requester=alice)
    assert got.value.detail == expected.value.detail


def test_the_body_of_a_task_is_the_task_serializer_s(alice, echo):
    queued = task_submit(requester=alice, agent=echo, input="hi", budget=100_000)
    assert task_body(queued) == TaskSerializer(Task.objects.get(pk=queued.pk)).data
    done = task_submit(requester=alice, agent=echo, input="hi", budget=100_000)
    claim = task_claim(task_id=done.pk)
    assert claim is not None
    success = Execution(exit_code=0, stdout=b"hi", fuel_used=1_000, fuel_limit=10_000)
    task_settle(task_id=done.pk, attempt=claim[1], execution=success)
    stored = Task.objects.select_related("agent", "binary", "escrow").get(pk=done.pk)
    assert task_body(stored) == TaskSerializer(stored).data
    assert task_body(stored)["result"]["output"] == "hi"


def test_a_submission_builds_no_serializer_fields(alice, echo, monkeypatch):
    client = client_for(alice)
    body = {"agent": "echo", "input": "hi", "budget": 100_000}
    assert client.post("/api/v1/tasks/", body, format="json").status_code == 201  # warm
    built: list[str] = []
    for cls in (serializers.Serializer, serializers.ModelSerializer):

        def get_fields(self, real=cls.get_fields):
            built.append(type(self).__name__)
            return real(self)

        monkeypatch.setattr(cls, "get_fields", get_fields)
    response = client.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 201
    assert response.json()["escrow"]["status"] == "funded"
    assert built == []
    assert response.json() == TaskSerializer(Task.objects.get(pk=response.json()["id"])).data
