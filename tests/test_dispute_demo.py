"""`manage.py load_demo` shows a resolved dispute: refunded by its owner, with the task's
receipt, its replay and the signed resolution; loading the demo again adds nothing."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from escrow.models import Dispute, Earning, Withdrawal
from execution.engine.receipts import receipt_verify
from reputation.models import ReputationEvent

pytestmark = pytest.mark.django_db


def test_the_demo_has_a_refunded_dispute_with_its_evidence(demo_settings):
    call_command("load_demo")

    dispute = Dispute.objects.select_related("task", "task__agent").get()
    task = dispute.task
    assert (dispute.requester.username, dispute.owner.username) == ("demo", "demo-owner")
    assert (task.agent.slug, task.idempotency_key) == ("wordcount", "demo-task-4")
    assert task.cost and (dispute.status, dispute.refunded) == ("accepted", task.cost)
    assert Earning.objects.get(task=task).status == "refunded"
    assert dispute.evidence["receipt"]["signature"] == task.receipt.signature
    assert receipt_verify(dispute.evidence["resolution_receipt"])
    assert '"kind":"dispute_refund"' in dispute.evidence["resolution_receipt"]["payload"]
    assert (dispute.replay_status, dispute.replay_output_sha256) == ("matched", task.output_sha256)
    event = ReputationEvent.objects.get(dispute=dispute)
    assert event.outcome in ("failure", "neutral") and event.delta <= 0
    assert list(Withdrawal.objects.values_list("user__username", "status")) == [("demo", "paid")]
    # (the autouse fixture then audits the ledger and the reputations)


def test_loading_the_demo_again_adds_no_dispute(demo_settings):
    call_command("load_demo")
    before = list(Dispute.objects.values_list("pk", "status", "refunded", "replay_status"))

    call_command("load_demo")

    after = list(Dispute.objects.values_list("pk", "status", "refunded", "replay_status"))
    assert after == before and len(after) == 1
    assert Withdrawal.objects.count() == 1
