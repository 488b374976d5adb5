"""The dashboard: balances, held in escrow, recent tasks updating live, the owner's agents."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import make_agent
from tests.views.conftest import HTMX, cost_of, earned_by_owner, fragment, page, settle, submit

DASHBOARD = reverse("dashboard")

pytestmark = pytest.mark.django_db


def test_a_new_user_sees_zero_balances_and_empty_states(as_alice):
    body = page(as_alice.get(DASHBOARD))

    assert "Hello, alice" in body
    assert body.count("0.000000 CR") == 3
    assert "No tasks yet" in body
    assert "You have not published an agent" in body
    assert 'hx-trigger="every 10s"' in body  # nothing is moving: poll slowly


def test_balances_and_tasks_in_flight(as_alice, funded_alice, echo):
    queued = submit(funded_alice, echo, budget=250_000)
    done = settle(submit(funded_alice, echo, budget=500_000))

    body = page(as_alice.get(DASHBOARD))

    spent = 250_000 + cost_of(done)
    assert f'data-testid="balance">{(10_000_000 - spent) / 1e6:.6f} CR<' in body
    assert 'data-testid="held">0.250000 CR<' in body
    assert reverse("task-detail", args=[queued.pk]) in body
    assert reverse("task-detail", args=[done.pk]) in body
    assert "badge-queued" in body and "badge-succeeded" in body
    assert 'hx-trigger="every 1s"' in body  # a task is in flight: poll fast


def test_the_live_region_is_served_as_a_fragment_to_htmx(as_alice, funded_alice, echo):
    submit(funded_alice, echo)

    response = as_alice.get(DASHBOARD, **HTMX)

    body = fragment(response)
    assert body.lstrip().startswith('<div id="live" hx-get="/" hx-trigger="every 1s"')
    assert "Your agents" not in body
    assert "HX-Request" in response["Vary"]


def test_nobody_sees_anybody_elses_tasks(as_charlie, funded_alice, echo):
    task = submit(funded_alice, echo)

    body = as_charlie.get(DASHBOARD).content.decode()

    assert reverse("task-detail", args=[task.pk]) not in body
    assert "No tasks yet" in body


def test_owners_see_their_agents_and_earnings(as_bob, bob, funded_alice, echo):
    make_agent(bob, slug="draft", with_binary=False)
    task = settle(submit(funded_alice, echo))

    body = as_bob.get(DASHBOARD).content.decode()

    earned = earned_by_owner(task)
    assert f'Earned so far: <strong class="money">0.{earned:06d} CR</strong>' in body
    assert reverse("agent-detail", args=["echo"]) in body
    assert "no binary" in body  # the draft
    assert "You have not published an agent" not in body


def test_the_dashboard_is_a_get(as_alice):
    assert as_alice.post(DASHBOARD).status_code == 405
