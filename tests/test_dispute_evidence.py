"""The platform's evidence in a dispute: a replay of the task's receipt, run by a worker
outside any transaction, recorded once, recovered when a worker was lost; in the API."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from escrow.models import Dispute
from escrow.services import deposit_create
from execution.dispute_evidence import dispute_replay, dispute_replays_recover
from execution.services import task_execute
from marketplace import disputes as dispute_flows
from marketplace.api.serializers.disputes import DisputeSerializer
from marketplace.binaries import binary_upload
from marketplace.disputes import REPLAY, dispute_file
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import AgentFactory, settled

pytestmark = pytest.mark.postgres

START = 10_000_000
ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"


@pytest.fixture
def queued(monkeypatch) -> list[tuple]:
    """What the marketplace asks the worker queue to run."""
    calls: list[tuple] = []
    monkeypatch.setattr(dispute_flows, "service_send", lambda *args, **kw: calls.append(args))
    return calls


@pytest.fixture
def echo_task(alice, bob) -> Task:
    """A task the real echo binary ran, with its receipt."""
    deposit_create(user_id=alice.pk, amount=10_000_000)
    echo = AgentFactory.create(owner=bob, slug="echo-real", base_fee=1_000, fuel_price=1_000)
    binary_upload(agent=echo, data=ECHO.read_bytes())
    echo.refresh_from_db()
    task = task_submit(requester=alice, agent=echo, input="prove it", budget=100_000)
    task_execute(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "succeeded", (task.failure_reason, task.failure_detail)
    return task


def test_opening_a_dispute_asks_a_worker_for_the_replay_once_committed(
    requester, agent, queued, django_capture_on_commit_callbacks
):
    task = settled(requester, agent)
    with django_capture_on_commit_callbacks() as callbacks:
        dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
        assert queued == []  # not before the dispute is committed
    assert dispute.replay_status == "pending" and dispute.replay_enqueued_at is not None

    for callback in callbacks:
        callback()

    assert queued == [(REPLAY, dispute.pk)]


def test_the_replay_matches_the_receipt(echo_task, alice, queued):
    dispute = dispute_file(task_id=echo_task.pk, user=alice, reason="wrong")

    assert dispute_replay(dispute.pk) == "matched"

    dispute.refresh_from_db()
    assert (dispute.replay_status, dispute.replay_attempts) == ("matched", 1)
    assert dispute.replay_output_sha256 == echo_task.output_sha256
    assert dispute.replayed_at is not None
    evidence = DisputeSerializer(dispute).data["evidence"]
    assert evidence["receipt"]["signature"] == echo_task.receipt.signature
    assert evidence["replay"]["status"] == "matched"
    assert evidence["replay"]["output_sha256"] == echo_task.output_sha256
    assert evidence["resolution_receipt"] is None
    # A duplicate message changes nothing.
    assert dispute_replay(dispute.pk) == "skipped"
    assert Dispute.objects.get(pk=dispute.pk).replay_attempts == 1


def test_a_receipt_whose_output_the_binary_does_not_print_is_mismatched(echo_task, alice, queued):
    dispute = dispute_file(task_id=echo_task.pk, user=alice, reason="wrong")
    receipt = dict(dispute.evidence["receipt"])
    payload = json.loads(receipt["payload"])
    payload["output_sha256"] = "0" * 64
    receipt["payload"] = json.dumps(payload)
    Dispute.objects.filter(pk=dispute.pk).update(evidence={"receipt": receipt})

    assert dispute_replay(dispute.pk) == "mismatched"

    dispute.refresh_from_db()
    assert dispute.replay_output_sha256 == echo_task.output_sha256
    assert dispute.replay_detail == f"output hash {echo_task.output_sha256} differs from {'0' * 64}"


def test_a_replay_that_cannot_run_is_unavailable(requester, agent, queued):
    task = settled(requester, agent)  # its binary row has no bytes behind it
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    assert dispute_replay(dispute.pk) == "unavailable"

    dispute.refresh_from_db()
    assert dispute.replay_status == "unavailable"
    assert dispute.replay_detail.startswith("the replay could not run")


def test_a_task_without_a_receipt_has_nothing_to_replay(requester, agent, queued):
    task = settled(requester, agent)
    task.receipt.delete()

    dispute = dispute_file(task_id=task.pk, user=Task.objects.get(pk=task.pk).requester, reason="x")

    assert (dispute.replay_status, dispute.replay_detail) == (
        "unavailable",
        "the task has no receipt to replay",
    )
    assert queued == []


def test_recovery_asks_again_for_a_replay_a_lost_worker_left_pending(
    requester, agent, queued, settings, django_capture_on_commit_callbacks
):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    now = timezone.now()

    # Recently asked for: left alone.
    assert dispute_replays_recover(now=now) == 0
    later = now + timedelta(seconds=settings.DISPUTE_REPLAY_RETRY_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert dispute_replays_recover(now=later) == 1
    assert queued == [(REPLAY, dispute.pk)]
    assert Dispute.objects.get(pk=dispute.pk).replay_enqueued_at == later
    assert dispute_replays_recover(now=later) == 0  # asked again just now


def test_a_replay_that_never_finishes_ends_unavailable(requester, agent, queued, settings):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    # Every try so far was lost with its worker (each had counted itself).
    Dispute.objects.filter(pk=dispute.pk).update(
        replay_attempts=settings.DISPUTE_REPLAY_MAX_ATTEMPTS
    )

    assert dispute_replay(dispute.pk) == "unavailable"

    dispute.refresh_from_db()
    assert (
        dispute.replay_detail
        == f"no replay finished in {settings.DISPUTE_REPLAY_MAX_ATTEMPTS} tries"
    )
    assert dispute_replays_recover(now=timezone.now() + timedelta(days=1)) == 0


def test_the_api_lists_the_replay_with_the_dispute(echo_task, alice, bob, queued, client):
    dispute = dispute_file(task_id=echo_task.pk, user=alice, reason="wrong")
    dispute_replay(dispute.pk)
    client.force_login(bob)

    body = client.get("/api/v1/disputes/").json()

    [listed] = body["results"]
    assert listed["evidence"]["replay"] == {
        "status": "matched",
        "replayed_at": listed["evidence"]["replay"]["replayed_at"],
        "output_sha256": echo_task.output_sha256,
        "detail": f"output hash {echo_task.output_sha256}",
    }
    assert listed["evidence"]["replay"]["replayed_at"] is not None


def test_the_admin_shows_the_replay(echo_task, alice, queued, admin_client):
    dispute = dispute_file(task_id=echo_task.pk, user=alice, reason="wrong")
    dispute_replay(dispute.pk)

    listing = admin_client.get("/admin/escrow/dispute/?replay_status=matched").content.decode()
    page = admin_client.get(f"/admin/escrow/dispute/{dispute.pk}/change/").content.decode()

    assert f"/admin/escrow/dispute/{dispute.pk}/change/" in listing
    assert echo_task.output_sha256 in page and "Matched" in page
    other = admin_client.get("/admin/escrow/dispute/?replay_status=mismatched").content.decode()
    assert f"/admin/escrow/dispute/{dispute.pk}/change/" not in other
