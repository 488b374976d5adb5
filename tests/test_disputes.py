"""Disputes: freeze the held share, refund it exactly, or let it go; channel tasks too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from escrow.channels import channel_close
from escrow.disputes import DisputeAlreadyOpen, DisputeStateError, DisputeWindowClosed
from escrow.earnings import earnings_release_due
from escrow.models import Dispute, Earning, PaymentChannel, Transfer
from escrow.services import system_balance
from execution.engine.receipts import receipt_verify
from marketplace.disputes import (
    DisputeNotFound,
    dispute_accept,
    dispute_contest,
    dispute_decide,
    dispute_file,
    disputes_of,
    disputes_resolve_overdue,
)
from marketplace.exceptions import TaskNotFound
from tests.factories import FEE, SHARE, balance, channel_opened, channel_tasks, held_for, settled

COST = SHARE + FEE  # 3_470
START = 10_000_000


def fees() -> int:
    return system_balance("platform_fees")


def earnings_account() -> int:
    return system_balance("earnings")


def refund_lines(task) -> list[tuple[str, str, str, int]]:
    lines = Transfer.objects.filter(task=task, kind__startswith="dispute_")
    return sorted(
        lines.values_list("kind", "debit_account__kind", "credit_account__user__username", "amount")
    )


def test_opening_freezes_the_held_share_and_the_sweep_skips_it(requester, agent, bob):
    task = settled(requester, agent)
    before = timezone.now()
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong answer")

    assert (dispute.status, dispute.reason, dispute.task_id) == ("open", "wrong answer", task.pk)
    assert dispute.owner_id == bob.pk and dispute.opened_at >= before
    assert dispute.respond_by == dispute.opened_at + timedelta(days=3)
    assert Earning.objects.get(task=task).status == "frozen"
    assert dispute.evidence["receipt"]["signature"] == task.receipt.signature
    assert earnings_release_due(now=timezone.now() + timedelta(days=30)) == 0
    assert (balance(bob), held_for(bob)) == (0, SHARE)
    with pytest.raises(DisputeAlreadyOpen):
        dispute_file(task_id=task.pk, user=requester, reason="again")


def test_only_the_requester_may_dispute(requester, agent, bob, charlie):
    task = settled(requester, agent)
    for other in (bob, charlie):
        with pytest.raises(TaskNotFound):
            dispute_file(task_id=task.pk, user=other, reason="mine?")
    assert not Dispute.objects.exists()


def test_after_the_release_the_window_is_closed(requester, agent, bob):
    task = settled(requester, agent)
    earnings_release_due(now=timezone.now() + timedelta(days=2))
    with pytest.raises(DisputeWindowClosed) as closed:
        dispute_file(task_id=task.pk, user=requester, reason="late")
    assert (closed.value.code, closed.value.status) == ("dispute_window_closed", 409)
    assert (balance(bob), Dispute.objects.count()) == (SHARE, 0)


def test_accepting_refunds_the_share_and_the_fee_exactly(requester, agent, bob, charlie):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert (balance(requester), fees(), earnings_account()) == (START - COST, FEE, SHARE)
    with pytest.raises(DisputeNotFound):
        dispute_accept(dispute_id=dispute.pk, user=charlie)
    with pytest.raises(DisputeNotFound):
        dispute_accept(dispute_id=dispute.pk, user=requester)

    dispute = dispute_accept(dispute_id=dispute.pk, user=bob)

    assert (dispute.status, dispute.refunded) == ("accepted", COST)
    assert (balance(requester), fees(), earnings_account()) == (START, 0, 0)
    assert (balance(bob), held_for(bob)) == (0, 0)
    assert Earning.objects.get(task=task).status == "refunded"
    assert refund_lines(task) == [
        ("dispute_fee_refund", "platform_fees", "alice", FEE),
        ("dispute_refund", "earnings", "alice", SHARE),
    ]
    receipt = dispute.evidence["resolution_receipt"]
    assert receipt_verify(receipt)
    assert '"kind":"dispute_refund"' in receipt["payload"]
    assert task.receipt.signature in receipt["payload"]
    with pytest.raises(DisputeStateError):
        dispute_accept(dispute_id=dispute.pk, user=bob)


def test_contested_then_refunded_by_an_operator(requester, agent, bob):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute = dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")
    assert (dispute.status, dispute.statement) == ("contested", "it was right")
    with pytest.raises(DisputeStateError):
        dispute_contest(dispute_id=dispute.pk, user=bob, statement="again")

    dispute = dispute_decide(dispute_id=dispute.pk, refund=True, operator="ops")

    assert (dispute.status, dispute.refunded) == ("refunded", COST)
    assert (balance(requester), fees(), earnings_account(), balance(bob)) == (START, 0, 0, 0)


def test_contested_then_rejected_releases_the_share_later(requester, agent, bob):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")

    dispute = dispute_decide(dispute_id=dispute.pk, refund=False, operator="ops")

    assert (dispute.status, dispute.refunded) == ("rejected", 0)
    assert '"kind":"dispute_rejection"' in dispute.evidence["resolution_receipt"]["payload"]
    assert Earning.objects.get(task=task).status == "held"
    assert refund_lines(task) == []
    earnings_release_due(now=timezone.now() + timedelta(days=2))
    assert (balance(bob), balance(requester), fees()) == (SHARE, START - COST, FEE)


def test_unanswered_by_respond_by_counts_as_accepted(requester, agent, bob):
    from execution.tasks import sweep_earnings

    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert disputes_resolve_overdue(now=dispute.respond_by - timedelta(seconds=1)) == 0
    Dispute.objects.filter(pk=dispute.pk).update(respond_by=timezone.now())

    assert sweep_earnings() == {"released": 0, "disputes_accepted": 1}

    dispute.refresh_from_db()
    assert (dispute.status, dispute.refunded) == ("accepted", COST)
    assert dispute.resolution == "unanswered by the owner: accepted"
    assert (balance(requester), balance(bob), fees()) == (START, 0, 0)


def test_both_sides_list_their_disputes(requester, agent, bob, charlie):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert list(disputes_of(requester)) == [dispute]
    assert list(disputes_of(bob)) == [dispute]
    assert list(disputes_of(charlie)) == []


@pytest.fixture
def channel(requester, agent, bob):
    return channel_opened(requester, agent, bob)


def test_a_refund_on_an_open_channel_lowers_what_it_redeemed(requester, agent, bob, channel):
    disputed, kept = channel_tasks(requester, agent, channel)
    dispute = dispute_file(task_id=disputed.pk, user=requester, reason="wrong")
    dispute = dispute_accept(dispute_id=dispute.pk, user=bob)
    assert (dispute.status, dispute.refunded) == ("accepted", COST)
    channel.refresh_from_db()
    assert (channel.redeemed, channel.fees) == (COST, FEE)

    channel_close(channel_id=channel.pk, by_user_id=requester.pk)

    assert list(Earning.objects.values_list("task_id", "amount")) == [(kept.pk, SHARE)]
    assert (balance(requester), fees(), held_for(bob)) == (START - COST, FEE, SHARE)
    assert refund_lines(disputed) == []


def test_a_dispute_open_when_the_channel_settles_starts_frozen(requester, agent, bob, channel):
    disputed, kept = channel_tasks(requester, agent, channel)
    dispute = dispute_file(task_id=disputed.pk, user=requester, reason="wrong")
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert PaymentChannel.objects.get(pk=channel.pk).status == "settled"
    statuses = dict(Earning.objects.values_list("task_id", "status"))
    assert statuses == {disputed.pk: "frozen", kept.pk: "held"}

    dispute_accept(dispute_id=dispute.pk, user=bob)

    assert refund_lines(disputed) == [
        ("dispute_fee_refund", "platform_fees", "alice", FEE),
        ("dispute_refund", "earnings", "alice", SHARE),
    ]
    assert (balance(requester), fees(), held_for(bob)) == (START - COST, FEE, SHARE)


def test_a_settled_channel_task_is_disputed_while_its_share_is_held(requester, agent, bob, channel):
    (task,) = channel_tasks(requester, agent, channel, count=1)
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert Earning.objects.get(task=task).status == "frozen"
    dispute_accept(dispute_id=dispute.pk, user=bob)
    assert (balance(requester), fees(), held_for(bob), balance(bob)) == (START, 0, 0, 0)
