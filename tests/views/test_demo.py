"""`manage.py load_demo`: sample agents, a requester with history, idempotent."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from escrow.models import PaymentChannel, Withdrawal
from execution.engine.receipts import receipt_verify
from execution.models import Receipt
from marketplace.models import Agent, Task
from reputation.models import ReputationEvent

pytestmark = pytest.mark.django_db


def test_the_demo_has_agents_and_a_history_that_adds_up(demo_settings, capsys):
    call_command("load_demo")

    agents = {agent.slug: agent for agent in Agent.objects.select_related("owner")}
    assert set(agents) >= {"echo", "wordcount", "sentiment", "primes"}
    assert {agent.owner.username for agent in agents.values()} == {"demo-owner"}
    assert all(agent.current_binary_id for agent in agents.values())

    tasks = Task.objects.filter(requester__username="demo")
    assert tasks.count() >= 5
    assert not tasks.exclude(status__in=Task.FINAL_STATUSES).exists()
    assert tasks.filter(status="succeeded").exists() and tasks.filter(status="failed").exists()
    echo = tasks.filter(agent__slug="echo", status="succeeded").first()
    assert echo is not None and bytes(echo.stdout) == echo.input.encode()
    assert all(receipt_verify(receipt.as_dict()) for receipt in Receipt.objects.all())
    # One agent has a reputation curve with ups and downs.
    curve = ReputationEvent.objects.filter(agent=agents["primes"]).order_by("id")
    deltas = [event.delta for event in curve]
    assert len(deltas) >= 5 and min(deltas) < 0 < max(deltas)
    # And an open payment channel with voucher history.
    channel = PaymentChannel.objects.get(requester__username="demo")
    assert channel.status == "open" and channel.nonce >= 1 and channel.redeemed > 0
    # And one withdrawal, paid out.
    assert list(Withdrawal.objects.values_list("user__username", "status")) == [("demo", "paid")]
    assert "demo data ready" in capsys.readouterr().out
    # (the autouse fixture then audits the ledger and the reputations)


def test_loading_the_demo_twice_changes_nothing(demo_settings):
    call_command("load_demo")
    before = (Task.objects.count(), ReputationEvent.objects.count(), Agent.objects.count())

    call_command("load_demo")

    assert (
        Task.objects.count(),
        ReputationEvent.objects.count(),
        Agent.objects.count(),
    ) == before
