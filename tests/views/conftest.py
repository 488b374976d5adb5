from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_submit
from tests.factories import MINIMAL_WASM, balance, make_agent  # noqa: F401 (used by tests)

HTMX: dict[str, Any] = {"HTTP_HX_REQUEST": "true"}
FUNDS = 10_000_000  # 10 CR


def client_for(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def anon() -> Client:
    return Client()


@pytest.fixture
def as_alice(alice) -> Client:
    return client_for(alice)


@pytest.fixture
def as_bob(bob) -> Client:
    return client_for(bob)


@pytest.fixture
def as_charlie(charlie) -> Client:
    return client_for(charlie)


@pytest.fixture
def echo(bob) -> Agent:
    """bob's agent, with a binary, ready to take tasks."""
    return make_agent(bob, description="Returns its input.", tags=["text", "utility"])


def submit(requester: Any, agent: Agent, *, budget: int = 250_000, **kwargs: Any) -> Task:
    return task_submit(requester=requester, agent=agent, input="hello", budget=budget, **kwargs)


def settle(task: Task, execution: Execution | None = None) -> Task:
    """Run the claim and the settlement a worker would, with a made-up result."""
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    _, attempt = claim
    execution = execution or Execution(
        exit_code=0, stdout=b"hello", fuel_used=123_457, fuel_limit=1_000_000, elapsed_ms=4
    )
    assert task_settle(task_id=task.pk, attempt=attempt, execution=execution)
    task.refresh_from_db()
    return task


def cost_of(task: Task) -> int:
    assert task.cost is not None
    return task.cost


def earned_by_owner(task: Task) -> int:
    assert task.cost is not None and task.fee is not None
    return task.cost - task.fee


def fragment(response: Any) -> str:
    """The body of an htmx response, checked to be a fragment and not a whole page."""
    body = response.content.decode()
    assert "<html" not in body and "<body" not in body, body[:200]
    return body


def page(response: Any) -> str:
    body = response.content.decode()
    assert "<html" in body, body[:200]
    return body
