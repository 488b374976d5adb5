"""Task lists never load the input and output of a page of tasks; a task's own endpoint
and page show them whole."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from execution.services import Execution, task_claim, task_settle
from marketplace.models import Task
from marketplace.services import task_submit
from tests.views.conftest import client_for as browser_client_for

from .conftest import client_for

BIG_INPUT = "i" * 200_000
BIG_OUTPUT = b"o" * 300_000

pytestmark = pytest.mark.django_db


@pytest.fixture
def settled(funded_alice, echo) -> Task:
    task = task_submit(requester=funded_alice, agent=echo, input=BIG_INPUT, budget=100_000)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    task_settle(
        task_id=task.pk,
        attempt=claim[1],
        execution=Execution(exit_code=0, stdout=BIG_OUTPUT, stderr=b"e" * 1_000),
    )
    return Task.objects.get(pk=task.pk)


def task_selects(queries: CaptureQueriesContext) -> list[str]:
    """The statements that read task rows."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "marketplace_task"' in q["sql"]
    ]


def reads_a_big_column(sql: str) -> bool:
    columns = sql.split(" FROM ", 1)[0]
    return any(f'"marketplace_task"."{name}"' in columns for name in ("input", "stdout", "stderr"))


def test_the_api_list_reads_no_input_or_output(funded_alice, settled, echo):
    for n in range(3):
        task_submit(requester=funded_alice, agent=echo, input=f"{n}" * 50_000, budget=100_000)
    client = client_for(funded_alice)

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/tasks/")

    listed = response.json()["results"]
    assert len(listed) == 4
    selects = task_selects(queries)
    assert selects and not [sql for sql in selects if reads_a_big_column(sql)]
    assert len(queries.captured_queries) <= 4  # one page, no query per task
    item = next(t for t in listed if t["id"] == str(settled.pk))
    assert "input" not in item
    assert item["result"] == {
        "exit_code": 0,
        "fuel_used": settled.fuel_used,
        "elapsed_ms": settled.elapsed_ms,
        "output_sha256": settled.output_sha256,
    }
    assert item["escrow"]["status"] == "released"


def test_the_task_itself_is_still_whole(funded_alice, settled):
    body = client_for(funded_alice).get(f"/api/v1/tasks/{settled.pk}/").json()

    assert body["input"] == BIG_INPUT
    assert body["result"]["output"] == BIG_OUTPUT.decode()
    assert body["result"]["stderr"] == "e" * 1_000


def test_the_browser_list_reads_no_input_or_output(funded_alice, settled):
    client = browser_client_for(funded_alice)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("task-list"))

    assert response.status_code == 200
    assert str(settled.pk)[:8] in response.content.decode()
    selects = task_selects(queries)
    assert selects and not [sql for sql in selects if reads_a_big_column(sql)]
