"""Disputes and held earnings in the operator console: listed, searched, read-only; a
contested dispute decided by an action exactly once, through the service."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from escrow.audit import ledger_audit
from escrow.models import Dispute, Earning, Transfer
from escrow.services import system_balance
from marketplace.disputes import dispute_contest, dispute_file
from tests.views.conftest import balance, client_for, settle, submit
from tests.views.test_admin import action, changelist, messages_of

pytestmark = pytest.mark.django_db
FUNDS = 10_000_000


@pytest.fixture
def operator() -> Client:
    return client_for(User.objects.create_superuser("root", password="a long enough passphrase"))


@pytest.fixture
def disputed(funded_alice, echo, bob) -> Dispute:
    """A contested dispute on a settled task of bob's agent."""
    task = settle(submit(funded_alice, echo))
    dispute = dispute_file(task_id=task.pk, user=funded_alice, reason="wrong answer")
    return dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")


def cost_of(dispute: Dispute) -> int:
    earning = Earning.objects.get(task_id=dispute.task_id)
    return earning.amount + earning.fee


def fees() -> int:
    return system_balance("platform_fees")


def text(response) -> str:
    return " ".join(messages_of(response))


def test_disputes_and_earnings_are_listed_filtered_searched_and_read_only(
    operator, disputed, funded_alice
):
    assert {Dispute, Earning} <= set(admin.site._registry)
    listing = operator.get(changelist(Dispute)).content.decode()
    for shown in (str(disputed.task_id), "alice", "bob", "contested"):
        assert shown in listing
    assert (
        str(disputed.task_id)
        in operator.get(
            changelist(Dispute), {"q": "alice", "status__exact": "contested"}
        ).content.decode()
    )
    assert (
        str(disputed.task_id)
        not in operator.get(changelist(Dispute), {"status__exact": "open"}).content.decode()
    )
    assert (
        str(disputed.task_id)
        in operator.get(
            changelist(Earning), {"q": "bob", "status__exact": "frozen"}
        ).content.decode()
    )
    for model in (Dispute, Earning):  # a word, an id, part of a task id
        for q in ("echo", str(disputed.pk), str(disputed.task_id)[:8]):
            assert operator.get(changelist(model), {"q": q}).status_code == 200
    assert (
        str(disputed.task_id)
        in operator.get(changelist(Dispute), {"q": str(disputed.task_id)[:8]}).content.decode()
    )
    change = reverse("admin:escrow_dispute_change", args=[disputed.pk])
    assert operator.get(change).status_code == 200
    assert operator.post(change, {"status": "refunded", "refunded": "1"}).status_code == 403
    assert operator.get(reverse("admin:escrow_dispute_add")).status_code == 403
    assert operator.get(reverse("admin:escrow_earning_add")).status_code == 403
    assert Dispute.objects.get(pk=disputed.pk).status == "contested"


def test_refunding_a_contested_dispute_moves_the_money_exactly_once(
    operator, disputed, funded_alice, bob
):
    cost = cost_of(disputed)
    earning = Earning.objects.get(task_id=disputed.task_id)
    assert balance(funded_alice) == FUNDS - cost

    response = action(operator, Dispute, "refund", disputed.pk)
    again = action(operator, Dispute, "refund", disputed.pk)

    dispute = Dispute.objects.get(pk=disputed.pk)
    assert (dispute.status, dispute.refunded) == ("refunded", cost)
    assert dispute.resolution == "refunded by operator root"
    assert "Refunded 1 dispute(s)" in text(response)
    assert "only a contested dispute is decided here" in text(again)
    assert "No dispute was decided." in text(again)
    assert (balance(funded_alice), balance(bob), fees()) == (FUNDS, 0, 0)
    lines = Transfer.objects.filter(task_id=dispute.task_id, kind__startswith="dispute_")
    assert sorted(lines.values_list("kind", "amount")) == [
        ("dispute_fee_refund", earning.fee),
        ("dispute_refund", earning.amount),
    ]
    assert Earning.objects.get(task_id=dispute.task_id).status == "refunded"
    assert ledger_audit().ok


def test_rejecting_a_contested_dispute_moves_no_money(operator, disputed, funded_alice, bob):
    cost = cost_of(disputed)

    response = action(operator, Dispute, "reject", disputed.pk)
    again = action(operator, Dispute, "refund", disputed.pk)

    dispute = Dispute.objects.get(pk=disputed.pk)
    assert (dispute.status, dispute.refunded, dispute.resolution) == (
        "rejected",
        0,
        "rejected by root",
    )
    assert "Rejected 1 dispute(s)." in text(response)
    assert "is rejected: only a contested dispute" in text(again)
    assert balance(funded_alice) == FUNDS - cost
    assert Earning.objects.get(task_id=dispute.task_id).status == "held"
    assert not Transfer.objects.filter(task_id=dispute.task_id, kind__startswith="dispute_")
    assert ledger_audit().ok


def test_an_open_dispute_is_refused_with_a_message(operator, funded_alice, echo):
    task = settle(submit(funded_alice, echo))
    dispute = dispute_file(task_id=task.pk, user=funded_alice, reason="wrong")

    response = action(operator, Dispute, "refund", dispute.pk)

    assert response.status_code == 200
    assert f"Dispute {dispute.pk} is open: only a contested dispute" in text(response)
    assert Dispute.objects.get(pk=dispute.pk).status == "open"
    assert Earning.objects.get(task=task).status == "frozen"


def test_a_service_error_is_an_admin_message_not_a_500(operator, disputed, monkeypatch):
    from escrow.disputes import DisputeStateError
    from marketplace import dispute_admin

    def decided_meanwhile(**kwargs):
        raise DisputeStateError("The dispute is already resolved.")

    monkeypatch.setattr(dispute_admin, "dispute_decide", decided_meanwhile)

    response = action(operator, Dispute, "reject", disputed.pk)

    assert response.status_code == 200
    assert f"Dispute {disputed.pk}: The dispute is already resolved." in text(response)
    assert "No dispute was decided." in text(response)


def test_staff_who_may_only_view_disputes_get_no_actions(disputed):
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user("viewer", password="a long enough passphrase", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_dispute"))
    client = client_for(viewer)

    body = client.get(changelist(Dispute)).content.decode()
    action(client, Dispute, "refund", disputed.pk)

    assert str(disputed.task_id) in body and "Refund the requester" not in body
    assert Dispute.objects.get(pk=disputed.pk).status == "contested"
