"""The disputes API: open (requester), accept or contest (owner), list (both)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from escrow.earnings import earnings_release_due
from tests.factories import balance, settled
from tests.test_disputes import COST, START

from .conftest import client_for, error


def test_open_accept_and_list(requester, agent, bob, charlie):
    task = settled(requester, agent)
    alice, owner = client_for(requester), client_for(bob)

    assert (
        client_for(charlie)
        .post(f"/api/v1/tasks/{task.pk}/dispute/", {"reason": "x"}, format="json")
        .status_code
        == 404
    )
    response = alice.post(f"/api/v1/tasks/{task.pk}/dispute/", {"reason": "wrong"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["task"], body["status"], body["reason"]) == (str(task.pk), "open", "wrong")
    assert body["opened_at"] and body["respond_by"]
    again = alice.post(f"/api/v1/tasks/{task.pk}/dispute/", {"reason": "wrong"}, format="json")
    assert error(again) == (409, "dispute_open")

    listed = owner.get("/api/v1/disputes/").json()
    assert [d["id"] for d in listed["results"]] == [body["id"]]
    assert listed["results"][0]["evidence"]["receipt"]["signature"] == task.receipt.signature
    assert client_for(charlie).get("/api/v1/disputes/").json()["count"] == 0
    assert alice.post(f"/api/v1/disputes/{body['id']}/accept/").status_code == 404

    accepted = owner.post(f"/api/v1/disputes/{body['id']}/accept/")
    assert accepted.status_code == 200, accepted.content
    assert (accepted.json()["status"], accepted.json()["refunded"]) == ("accepted", COST)
    assert balance(requester) == START


def test_contest_and_the_closed_window(requester, agent, bob):
    task, late = settled(requester, agent), settled(requester, agent)
    earnings_release_due(now=timezone.now() + timedelta(days=2))
    alice, owner = client_for(requester), client_for(bob)

    closed = alice.post(f"/api/v1/tasks/{late.pk}/dispute/", {"reason": "late"}, format="json")
    assert error(closed) == (409, "dispute_window_closed")

    settled_again = settled(requester, agent)
    opened = alice.post(
        f"/api/v1/tasks/{settled_again.pk}/dispute/", {"reason": "w"}, format="json"
    )
    contested = owner.post(
        f"/api/v1/disputes/{opened.json()['id']}/contest/", {"statement": "right"}, format="json"
    )
    assert contested.status_code == 200, contested.content
    assert (contested.json()["status"], contested.json()["statement"]) == ("contested", "right")
    assert task.pk != settled_again.pk
