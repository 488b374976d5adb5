"""Disputes report themselves by webhook: `dispute.opened` to the agent's owner,
`dispute.resolved` to both parties, each written in the transaction of the change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from escrow.models import Dispute, Earning
from marketplace import disputes
from marketplace.disputes import (
    dispute_accept,
    dispute_contest,
    dispute_decide,
    dispute_file,
    disputes_resolve_overdue,
)
from marketplace.webhooks.events import event_data
from marketplace.webhooks.models import WebhookDelivery
from marketplace.webhooks.outbox import webhook_create
from tests.factories import FEE, SHARE, balance, settled

pytestmark = pytest.mark.django_db
COST = SHARE + FEE
START = 10_000_000
URL = "http://127.0.0.1:9/hooks"
EVENTS = ["dispute.opened", "dispute.resolved"]


@pytest.fixture
def hooks(requester, bob):
    """Both parties listen to both dispute events."""
    return {
        "alice": webhook_create(owner=requester, url=URL, events=EVENTS),
        "bob": webhook_create(owner=bob, url=URL, events=EVENTS),
    }


def outbox() -> list[tuple[str, str, str]]:
    rows = WebhookDelivery.objects.select_related("endpoint__owner")
    return sorted(rows.values_list("type", "endpoint__owner__username", "object_id"))


class Boom(Exception):
    pass


def fail_after_recording(monkeypatch) -> list[str]:
    """The event is recorded, then the transaction fails: both must go."""
    recorded: list[str] = []
    real = disputes.webhook_event_record

    def record_then_fail(**kwargs: Any) -> Any:
        recorded.append(kwargs["type"])
        real(**kwargs)
        raise Boom

    monkeypatch.setattr(disputes, "webhook_event_record", record_then_fail)
    return recorded


def test_opening_tells_the_owner_with_the_disputes_api_body(requester, agent, bob, hooks):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong answer")

    assert outbox() == [("dispute.opened", "bob", str(dispute.pk))]
    row = WebhookDelivery.objects.get()
    assert row.endpoint_id == hooks["bob"].pk
    data = event_data(row.type, row.object_id)["dispute"]
    assert data["id"] == dispute.pk and data["task"] == str(task.pk)
    assert (data["status"], data["reason"], data["refunded"]) == ("open", "wrong answer", 0)
    assert set(data) >= {"opened_at", "respond_by", "evidence", "statement", "resolution"}


def test_an_opening_that_rolls_back_takes_its_event_with_it(
    requester, agent, bob, hooks, monkeypatch
):
    task = settled(requester, agent)
    recorded = fail_after_recording(monkeypatch)

    with pytest.raises(Boom):
        dispute_file(task_id=task.pk, user=requester, reason="wrong")

    assert recorded == ["dispute.opened"]
    assert outbox() == []
    assert not Dispute.objects.exists()
    assert Earning.objects.get(task=task).status == "held"


def test_accepting_tells_both_parties_once(requester, agent, bob, hooks):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)

    pk = str(dispute.pk)
    assert outbox() == [
        ("dispute.opened", "bob", pk),
        ("dispute.resolved", "alice", pk),
        ("dispute.resolved", "bob", pk),
    ]
    resolved = WebhookDelivery.objects.filter(type="dispute.resolved")
    assert len({row.event_id for row in resolved}) == 2  # one event per party
    data = event_data("dispute.resolved", pk)["dispute"]
    assert (data["status"], data["refunded"]) == ("accepted", COST)
    assert data["evidence"]["resolution_receipt"]["signature"]
    assert balance(requester) == START


@pytest.mark.parametrize(("refund", "status"), [(True, "refunded"), (False, "rejected")])
def test_an_operators_decision_is_reported_as_resolved(
    requester, agent, bob, hooks, refund, status
):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")
    assert outbox() == [("dispute.opened", "bob", str(dispute.pk))]  # contesting isn't news

    dispute_decide(dispute_id=dispute.pk, refund=refund, operator="ops")

    resolved = WebhookDelivery.objects.filter(type="dispute.resolved")
    assert sorted(resolved.values_list("endpoint__owner__username", flat=True)) == ["alice", "bob"]
    assert event_data("dispute.resolved", str(dispute.pk))["dispute"]["status"] == status


def test_a_decision_that_rolls_back_takes_its_event_with_it(
    requester, agent, bob, hooks, monkeypatch
):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")
    fail_after_recording(monkeypatch)

    with pytest.raises(Boom):
        dispute_decide(dispute_id=dispute.pk, refund=True, operator="ops")

    assert outbox() == [("dispute.opened", "bob", str(dispute.pk))]
    assert Dispute.objects.get(pk=dispute.pk).status == "contested"
    assert balance(requester) == START - COST


def test_the_deadline_acceptance_is_reported_as_resolved(requester, agent, bob, hooks):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    Dispute.objects.filter(pk=dispute.pk).update(respond_by=timezone.now() - timedelta(seconds=1))

    assert disputes_resolve_overdue() == 1

    resolved = WebhookDelivery.objects.filter(type="dispute.resolved", object_id=str(dispute.pk))
    assert sorted(resolved.values_list("endpoint__owner__username", flat=True)) == ["alice", "bob"]
    assert event_data("dispute.resolved", str(dispute.pk))["dispute"]["status"] == "accepted"


def test_nobody_listening_writes_nothing_and_unknown_ids_render_none(requester, agent, bob):
    task = settled(requester, agent)
    webhook_create(owner=bob, url=URL, events=["task.failed"])
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)

    assert outbox() == []
    assert event_data("dispute.opened", "999999") == {"dispute": None}
    assert event_data("dispute.opened", "x") == {"dispute": None}
