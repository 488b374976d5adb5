"""The admin shows a version's contract and an agent's output schema, and changes neither
(SPEC §19: a version's contract never changes)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from marketplace.models import Agent, AgentBinary
from tests.factories import AgentBinaryFactory
from tests.views.conftest import client_for, make_agent

pytestmark = pytest.mark.django_db

INPUT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
OUTPUT = {"type": "object", "required": ["words"]}


@pytest.fixture
def operator() -> Client:
    return client_for(User.objects.create_superuser("root", password="a long enough passphrase"))


@pytest.fixture
def typed(bob) -> AgentBinary:
    agent = make_agent(bob, slug="typed", with_binary=False)
    binary = AgentBinaryFactory.create(
        agent=agent, version=1, input_schema=INPUT, output_schema=OUTPUT
    )
    Agent.objects.filter(pk=agent.pk).update(current_binary=binary, output_schema=OUTPUT)
    return binary


def test_a_versions_contract_is_shown_and_cannot_be_changed(operator, typed):
    url = reverse("admin:marketplace_agentbinary_change", args=[typed.pk])

    page = operator.get(url).content.decode()
    refused = operator.post(url, {"input_schema": "null", "output_schema": "null"})

    assert "Input schema" in page and "&quot;required&quot;" in page
    assert '<textarea name="input_schema"' not in page  # shown, not an input
    assert refused.status_code == 403
    typed.refresh_from_db()
    assert (typed.input_schema, typed.output_schema) == (INPUT, OUTPUT)


def test_an_agents_output_schema_is_read_only_in_the_admin(operator, typed):
    agent = typed.agent
    url = reverse("admin:marketplace_agent_change", args=[agent.pk])
    data = {
        "name": "Typed II",
        "description": "",
        "tags": "",
        "base_fee": "1000",
        "fuel_price": "2000",
        "output_schema": "null",
        "recommended_fuel": "2000000",
        "recommended_memory_mb": "64",
        "recommended_timeout_ms": "10000",
    }

    assert '<textarea name="output_schema"' not in operator.get(url).content.decode()
    response = operator.post(url, data)

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.name, agent.output_schema) == ("Typed II", OUTPUT)
