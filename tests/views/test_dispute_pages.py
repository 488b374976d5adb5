"""Disputes in the browser: the requester's Dispute button on a task's page, the owner's
Accept and Contest on the dashboard, and who sees what (anybody else: 404)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from escrow.channels import channel_close, channel_open, key_register
from escrow.earnings import earnings_release_due
from escrow.models import Dispute, Earning
from marketplace.disputes import dispute_file
from tests.factories import KEY, public, sign
from tests.views.conftest import (
    FUNDS,
    HTMX,
    balance,
    cost_of,
    earned_by_owner,
    fragment,
    page,
    settle,
    submit,
)

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("dashboard")


@pytest.fixture
def done(funded_alice, echo):
    """alice's task on bob's agent, succeeded: bob's share is held."""
    return settle(submit(funded_alice, echo))


def dispute_url(task) -> str:
    return reverse("task-dispute", args=[task.pk])


def release_everything() -> None:
    earnings_release_due(now=timezone.now() + timedelta(days=30))


def test_the_requester_sees_a_dispute_button_while_the_earnings_are_held(as_alice, done):
    body = page(as_alice.get(reverse("task-detail", args=[done.pk])))

    assert f'hx-post="{dispute_url(done)}"' in body
    assert '<label for="dispute_reason">Reason</label>' in body
    assert f"its cost of {cost_of(done) / 1_000_000:.6f} CR comes back to you" in body


def test_a_task_that_has_not_succeeded_has_no_dispute_section(as_alice, funded_alice, echo):
    queued = submit(funded_alice, echo)

    body = page(as_alice.get(reverse("task-detail", args=[queued.pk])))

    assert dispute_url(queued) not in body
    assert 'data-testid="dispute"' not in body


def test_opening_a_dispute_shows_its_status_and_freezes_the_share(as_alice, done):
    response = as_alice.post(dispute_url(done), {"reason": "The output is wrong."}, **HTMX)

    body = fragment(response)
    assert response.status_code == 200
    dispute = Dispute.objects.get(task=done)
    assert (dispute.status, dispute.reason) == ("open", "The output is wrong.")
    assert Earning.objects.get(task=done).status == "frozen"
    assert '<span class="badge badge-open">open</span>' in body
    assert "The output is wrong." in body
    assert "Dispute opened" in body  # the flash message travels with the fragment
    assert '<button type="submit" class="btn btn-danger btn-sm">Dispute</button>' not in body
    # While it is pending the section watches it.
    assert f'hx-get="{dispute_url(done)}" hx-trigger="every 2s"' in body


def test_a_dispute_needs_a_reason(as_alice, done):
    body = fragment(as_alice.post(dispute_url(done), {"reason": "  "}, **HTMX))

    assert "This field is required." in body
    assert not Dispute.objects.exists()


def test_once_the_earnings_are_released_there_is_no_button(as_alice, done):
    release_everything()

    body = page(as_alice.get(reverse("task-detail", args=[done.pk])))

    assert f'hx-post="{dispute_url(done)}"' not in body
    assert "The window to dispute this task has closed" in body


def test_a_channel_task_is_disputable_until_its_share_is_released(
    as_alice, funded_alice, echo, bob
):
    key_register(user_id=funded_alice.pk, public_key=public(KEY))
    channel = channel_open(
        requester_user_id=funded_alice.pk, agent_id=echo.pk, payee_user_id=bob.pk, deposit=500_000
    )
    paid = dict(payment="channel", channel=str(channel.pk), voucher=sign(channel.pk, 1, 100_000))
    task = settle(submit(funded_alice, echo, budget=100_000, **paid))
    detail = reverse("task-detail", args=[task.pk])

    # The channel is open: nothing is held yet, but the task cost something.
    assert f'hx-post="{dispute_url(task)}"' in page(as_alice.get(detail))
    channel_close(channel_id=channel.pk, by_user_id=funded_alice.pk)
    assert Earning.objects.get(task=task).status == "held"
    assert f'hx-post="{dispute_url(task)}"' in page(as_alice.get(detail))
    release_everything()
    assert f'hx-post="{dispute_url(task)}"' not in page(as_alice.get(detail))


def test_a_dispute_racing_the_release_shows_the_services_409(as_alice, done):
    # The page was drawn with the button; the sweep released the share before the click.
    assert f'hx-post="{dispute_url(done)}"' in page(
        as_alice.get(reverse("task-detail", args=[done.pk]))
    )
    release_everything()

    response = as_alice.post(dispute_url(done), {"reason": "too late"}, **HTMX)

    body = fragment(response)
    assert 'data-testid="dispute-error"' in body
    assert "dispute_window_closed" in body
    assert "too late to dispute" in body
    assert not Dispute.objects.exists()


def test_a_second_dispute_shows_the_open_one(as_alice, funded_alice, done):
    dispute_file(task_id=done.pk, user=funded_alice, reason="first")

    body = fragment(as_alice.get(dispute_url(done), **HTMX))

    assert '<span class="badge badge-open">open</span>' in body
    assert f'hx-post="{dispute_url(done)}"' not in body


def test_without_javascript_opening_a_dispute_redirects_to_the_task(as_alice, done):
    response = as_alice.post(dispute_url(done), {"reason": "wrong"})

    assert response.status_code == 302
    assert response["Location"] == reverse("task-detail", args=[done.pk])
    assert Dispute.objects.get(task=done).status == "open"


@pytest.mark.parametrize("who", ["as_bob", "as_charlie"])
def test_nobody_but_the_requester_sees_or_opens_a_tasks_dispute(request, who, done):
    client = request.getfixturevalue(who)

    assert client.get(dispute_url(done), **HTMX).status_code == 404
    assert client.post(dispute_url(done), {"reason": "mine"}, **HTMX).status_code == 404
    assert not Dispute.objects.exists()


@pytest.fixture
def dispute(funded_alice, done):
    return dispute_file(task_id=done.pk, user=funded_alice, reason="The output is wrong.")


def test_the_owner_sees_open_disputes_with_accept_and_contest(as_bob, dispute, done):
    body = page(as_bob.get(DASHBOARD))

    assert 'hx-trigger="wallet-changed from:body" hx-target="#live"' in body
    assert "Disputes on your agents" in body
    assert "The output is wrong." in body
    assert f'hx-post="{reverse("dispute-accept", args=[dispute.pk])}"' in body
    assert f'hx-post="{reverse("dispute-contest", args=[dispute.pk])}"' in body
    assert f'<label for="contest_{dispute.pk}_statement">Statement</label>' in body
    assert f"{cost_of(done) / 1_000_000:.6f} CR" in body


def test_accepting_refunds_the_requester_and_empties_the_owners_pending(
    as_bob, alice, bob, dispute, done
):
    response = as_bob.post(reverse("dispute-accept", args=[dispute.pk]), **HTMX)

    body = fragment(response)
    assert response["HX-Trigger"] == "wallet-changed"  # the live balances reload
    assert "No disputes to answer." in body
    assert f"Dispute accepted: {cost_of(done) / 1_000_000:.6f} CR went back" in body
    assert balance(alice) == FUNDS
    assert Earning.objects.get(task=done).status == "refunded"
    live = fragment(as_bob.get(DASHBOARD, **HTMX))
    assert '<span class="stat-value" data-testid="pending-earnings">0.000000 CR</span>' in live


def test_contesting_needs_a_statement_then_waits_for_an_operator(as_bob, dispute):
    url = reverse("dispute-contest", args=[dispute.pk])

    body = fragment(as_bob.post(url, {"statement": ""}, **HTMX))
    assert "This field is required." in body
    assert Dispute.objects.get().status == "open"

    response = as_bob.post(url, {"statement": "It matched the schema."}, **HTMX)
    body = fragment(response)
    assert Dispute.objects.get().status == "contested"
    assert '<span class="badge badge-contested">contested</span>' in body
    assert "It matched the schema." in body
    assert f'hx-post="{reverse("dispute-accept", args=[dispute.pk])}"' not in body


def test_answering_a_resolved_dispute_shows_the_services_refusal(as_bob, dispute):
    as_bob.post(reverse("dispute-accept", args=[dispute.pk]), **HTMX)

    response = as_bob.post(
        reverse("dispute-contest", args=[dispute.pk]), {"statement": "late"}, **HTMX
    )

    body = fragment(response)
    assert "dispute_state" in body
    assert "Only an open dispute can be contested." in body
    assert "HX-Trigger" not in response
    assert Dispute.objects.get().status == "accepted"


def test_without_javascript_accepting_redirects_to_the_dashboard(as_bob, alice, dispute):
    response = as_bob.post(reverse("dispute-accept", args=[dispute.pk]))

    assert (response.status_code, response["Location"]) == (302, DASHBOARD)
    assert Dispute.objects.get().status == "accepted"
    assert balance(alice) == FUNDS


@pytest.mark.parametrize("who", ["as_alice", "as_charlie"])
def test_only_the_owner_answers_a_dispute(request, who, dispute):
    client = request.getfixturevalue(who)

    accept = client.post(reverse("dispute-accept", args=[dispute.pk]), **HTMX)
    contest = client.post(
        reverse("dispute-contest", args=[dispute.pk]), {"statement": "no"}, **HTMX
    )

    assert (accept.status_code, contest.status_code) == (404, 404)
    assert Dispute.objects.get().status == "open"


def test_others_do_not_see_a_dispute_on_their_dashboard(as_charlie, dispute):
    body = page(as_charlie.get(DASHBOARD))

    assert "The output is wrong." not in body
    assert "Your disputes" not in body
    received = fragment(as_charlie.get(reverse("disputes-received"), **HTMX))
    assert "No disputes to answer." in received
    assert "The output is wrong." not in received


def test_the_requester_watches_their_dispute_until_it_is_resolved(as_alice, bob, dispute, done):
    body = page(as_alice.get(DASHBOARD))
    assert "Your disputes" in body
    assert f'hx-get="{reverse("disputes-opened")}" hx-trigger="every 2s"' in body

    from marketplace.disputes import dispute_accept

    dispute_accept(dispute_id=dispute.pk, user=bob)
    response = as_alice.get(reverse("disputes-opened"), **HTMX)

    assert response.status_code == 286  # resolved: the polling stops
    body = fragment(response)
    assert '<span class="badge badge-accepted">accepted</span>' in body
    assert f"{cost_of(done) / 1_000_000:.6f} CR" in body
    assert "hx-trigger" not in body


def test_the_requesters_task_page_shows_the_refund(as_alice, bob, dispute, done):
    from marketplace.disputes import dispute_accept

    dispute_accept(dispute_id=dispute.pk, user=bob)
    response = as_alice.get(dispute_url(done), **HTMX)

    body = fragment(response)
    assert response.status_code == 286
    assert f"{cost_of(done) / 1_000_000:.6f} CR went back to your wallet." in body
    assert earned_by_owner(done) > 0


def test_dispute_fragments_send_a_plain_request_to_the_page(as_alice, as_bob, done):
    assert as_alice.get(dispute_url(done))["Location"] == reverse("task-detail", args=[done.pk])
    assert as_bob.get(reverse("disputes-received"))["Location"] == DASHBOARD
    assert as_alice.get(reverse("disputes-opened"))["Location"] == DASHBOARD
