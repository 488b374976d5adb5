"""`manage.py load_demo` lists the typed sample agent (SPEC §19): wordstats, whose version
takes a JSON input checked against its input schema, with tasks run for real."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from execution.engine.receipts import receipt_verify
from marketplace.models import Agent, Task

pytestmark = pytest.mark.django_db


def test_the_demo_runs_the_typed_sample_agent_on_json_inputs(demo_settings):
    call_command("load_demo")

    agent = Agent.objects.select_related("current_binary").get(slug="wordstats")
    binary = agent.current_binary
    assert binary is not None and binary.version == 1
    assert binary.input_schema is not None and binary.input_schema["required"] == ["text"]
    assert agent.output_schema == binary.output_schema
    # The demo's evaluated wordstats task is tests/test_evaluation_demo.py's.
    tasks = list(Task.objects.filter(agent=agent, evaluator=None).order_by("created_at"))
    assert [t.status for t in tasks] == ["succeeded", "succeeded"]
    first = json.loads(bytes(tasks[0].stdout))
    assert first == {
        "words": 14,
        "unique": 8,
        "top": [
            {"word": "the", "count": 4},
            {"word": "cat", "count": 2},
            {"word": "mat", "count": 2},
        ],
    }
    assert json.loads(tasks[0].input)["ignore_case"] is True
    payload = json.loads(tasks[0].receipt.payload)
    assert payload["agent_version"] == 1 and receipt_verify(tasks[0].receipt.as_dict())
