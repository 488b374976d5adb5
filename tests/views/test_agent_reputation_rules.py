"""The agent pages and SPEC §13: recommended limits set by the owner, the requesters a score
rests on, and reputation events that say why they were not scored."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from escrow.services import deposit_create
from execution.services import Execution
from marketplace.models import Agent
from tests.views.conftest import HTMX, page, settle, submit

NEW = reverse("agent-new")
DETAIL = reverse("agent-detail", args=["echo"])

pytestmark = pytest.mark.django_db


def agent_form(**overrides):
    return {
        "name": "Word count",
        "slug": "wordcount",
        "base_fee": "0.002",
        "fuel_price": "0.0015",
        **overrides,
    }


def test_listing_an_agent_takes_its_recommended_limits(as_alice):
    as_alice.post(
        NEW,
        agent_form(
            recommended_fuel="5000000", recommended_memory_mb="16", recommended_timeout_ms="2500"
        ),
    )
    agent = Agent.objects.get(slug="wordcount")
    assert (agent.recommended_fuel, agent.recommended_memory_mb, agent.recommended_timeout_ms) == (
        5_000_000,
        16,
        2_500,
    )


def test_limits_left_blank_are_the_platform_defaults(as_alice, settings):
    as_alice.post(NEW, agent_form(recommended_fuel="", recommended_memory_mb=""))
    agent = Agent.objects.get(slug="wordcount")
    assert (agent.recommended_fuel, agent.recommended_memory_mb) == (
        settings.TASK_DEFAULT_FUEL,
        settings.TASK_DEFAULT_MEMORY_MB,
    )


def test_a_limit_over_the_maximum_is_refused_next_to_its_field(as_alice, settings):
    response = as_alice.post(NEW, agent_form(recommended_memory_mb="100000"), **HTMX)
    body = response.content.decode()
    assert "recommended_memory_mb_error" in body
    assert f"less than or equal to {settings.TASK_MAX_MEMORY_MB}" in body
    assert not Agent.objects.exists()


def test_the_page_shows_limits_requesters_and_why_events_were_not_scored(
    as_charlie, funded_alice, bob, echo
):
    deposit_create(user_id=bob.pk, amount=1_000_000)
    settle(submit(funded_alice, echo))
    settle(submit(bob, echo))  # the owner's own run
    starved = submit(funded_alice, echo, timeout_ms=5)
    settle(starved, Execution(reason="timeout", elapsed_ms=5))

    body = page(as_charlie.get(DETAIL))

    assert 'data-testid="requesters">1<' in body
    assert "distinct requester the score rests on" in body
    assert "1,000,000,000 fuel · 64 MB · 10,000 ms" in html.unescape(body)
    assert "Reputation events" in body
    assert "the requester owns the agent" in body
    assert "below the agent&#x27;s recommended limits" in body
    assert body.count("not scored</span>") == 2
    # The owner's form is the owner's alone.
    assert 'id="limits-form"' not in body


def test_the_owner_changes_the_recommended_limits_on_the_page(as_bob, echo):
    form = page(as_bob.get(DETAIL))
    assert 'id="limits-form"' in form and 'value="1000000000"' in form

    response = as_bob.post(DETAIL, {"recommended_fuel": "2000000", "recommended_timeout_ms": ""})

    assert response.status_code == 302
    echo.refresh_from_db()
    assert (echo.recommended_fuel, echo.recommended_timeout_ms) == (2_000_000, 10_000)
    assert "Recommended limits saved" in page(as_bob.get(DETAIL))


def test_a_bad_limit_is_shown_next_to_its_field(as_bob, echo):
    response = as_bob.post(DETAIL, {"recommended_timeout_ms": "0"})
    assert response.status_code == 200
    assert "recommended_timeout_ms_error" in response.content.decode()
    echo.refresh_from_db()
    assert echo.recommended_timeout_ms == 10_000


def test_nobody_else_changes_an_agents_limits(as_charlie, echo):
    response = as_charlie.post(DETAIL, {"recommended_fuel": "1"})
    assert response.status_code == 404
    echo.refresh_from_db()
    assert echo.recommended_fuel == 1_000_000_000
