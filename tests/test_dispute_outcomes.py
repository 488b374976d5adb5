"""What a dispute's resolution does besides the money: the agent's reputation (a refund is
the agent's failure, a rejection nothing, exactly once), the API key's spend counters, and
the ledger audit's per-task check."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from escrow.audit import ledger_audit
from escrow.channels import channel_close, key_register
from escrow.disputes import DisputeStateError
from escrow.models import Account, Transfer
from escrow.services import deposit_create, wallet_id
from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys.lifecycle import api_key_create
from marketplace.apikeys.spending import (
    api_key_channel_open,
    api_key_spending,
    api_keys_settle_channels,
)
from marketplace.disputes import (
    dispute_accept,
    dispute_contest,
    dispute_decide,
    dispute_file,
    disputes_resolve_overdue,
)
from reputation.audit import reputation_audit
from reputation.disputes import reputation_apply_dispute
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import FEE, KEY, SHARE, balance, paid_by, public, settled

pytestmark = pytest.mark.postgres

BUDGET = 100_000
DEPOSIT = 1_000_000
COST = SHARE + FEE  # 3_470
START = 10_000_000


def yesterdays(task) -> ReputationEvent:
    """Score the task's settlement on the day before: today's cap is then untouched."""
    day = timezone.now().date() - timedelta(days=1)
    ReputationEvent.objects.filter(task=task).update(settled_on=day)
    return ReputationEvent.objects.get(task=task)


def score(of) -> D:
    return AgentReputation.objects.get(agent=of).score


def refund_by(how: str, dispute, owner) -> None:
    if how == "accepted":
        dispute_accept(dispute_id=dispute.pk, user=owner)
    elif how == "operator":
        dispute_contest(dispute_id=dispute.pk, user=owner, statement="it was right")
        dispute_decide(dispute_id=dispute.pk, refund=True, operator="ops")
    else:
        assert disputes_resolve_overdue(now=timezone.now() + timedelta(days=4)) == 1


@pytest.mark.parametrize("how", ["accepted", "operator", "overdue"])
def test_a_refunded_dispute_costs_the_agent_five_points(requester, agent, bob, how):
    task = settled(requester, agent)
    settlement = yesterdays(task)
    before = score(agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    refund_by(how, dispute, bob)

    event = ReputationEvent.objects.get(dispute=dispute)
    assert (event.outcome, event.reason, event.neutral_reason) == (
        "failure",
        "dispute_refunded",
        "",
    )
    assert (event.delta, event.weight, event.task_id) == (D("-5"), D(1), None)
    assert (event.agent_id, event.requester_id, event.daily_cap) == (agent.pk, requester.pk, D(5))
    assert (event.score_before, event.score_after) == (before, before - 5)
    rep = AgentReputation.objects.get(agent=agent)
    assert (rep.score, rep.successes, rep.failures, rep.requesters) == (before - 5, 1, 1, 1)
    assert ReputationEvent.objects.get(task=task) == settlement  # the task's own is untouched
    assert reputation_audit().ok


def test_on_the_settlements_day_the_refund_costs_what_the_daily_cap_leaves(requester, agent, bob):
    task = settled(requester, agent)
    success = ReputationEvent.objects.get(task=task).delta
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    event = ReputationEvent.objects.get(dispute=dispute)
    assert event.outcome == "failure" and D(0) < event.weight < D(1)
    assert event.delta == -(D(5) - success)  # one requester moves an agent ≤ 5 points a day
    assert score(agent) == D(50) + success - (D(5) - success)


def test_a_rejected_dispute_costs_nothing(requester, agent, bob):
    task = settled(requester, agent)
    before = score(agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="it was right")

    dispute_decide(dispute_id=dispute.pk, refund=False, operator="ops")

    assert not ReputationEvent.objects.filter(dispute=dispute).exists()
    assert ReputationEvent.objects.filter(agent=agent).count() == 1
    assert score(agent) == before


def test_the_refunds_reputation_is_applied_exactly_once(requester, agent, bob):
    task = settled(requester, agent)
    yesterdays(task)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    first = ReputationEvent.objects.get(dispute=dispute)
    after = score(agent)

    with pytest.raises(DisputeStateError):
        dispute_accept(dispute_id=dispute.pk, user=bob)
    assert disputes_resolve_overdue(now=timezone.now() + timedelta(days=4)) == 0
    again = reputation_apply_dispute(
        agent_id=agent.pk, dispute_id=dispute.pk, requester_id=requester.pk, owner_id=bob.pk
    )

    assert again == first
    assert ReputationEvent.objects.filter(agent=agent).count() == 2
    rep = AgentReputation.objects.get(agent=agent)
    assert (rep.score, rep.failures) == (after, 1)


def test_a_dispute_of_ones_own_agent_is_not_scored(agent, bob):
    deposit_create(user_id=bob.pk, amount=START)
    task = settled(bob, agent)
    before = score(agent)
    dispute = dispute_file(task_id=task.pk, user=bob, reason="mine")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    event = ReputationEvent.objects.get(dispute=dispute)
    assert (event.outcome, event.neutral_reason, event.delta) == ("neutral", "self_dealing", 0)
    assert score(agent) == before
    assert balance(bob) == START  # the refund still happened


# --- API keys -----------------------------------------------------------------------------


def test_a_refund_gives_the_cost_back_to_the_key_that_paid_exactly_once(requester, agent, bob):
    key, _ = api_key_create(
        user=requester, name="bot", scopes=["tasks:write"], limits={"daily": 1_000_000}
    )
    task = settled(requester, agent, api_key=key)
    key.refresh_from_db()
    # Settlement gave back what the task did not spend: the key counts the cost alone.
    assert (key.spent_daily, key.spent_monthly, key.spent_total) == (COST, COST, COST)
    charge = ApiKeyCharge.objects.get(task=task)
    assert (charge.amount, charge.given_back) == (BUDGET, BUDGET - COST)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    key.refresh_from_db()
    assert (key.spent_daily, key.spent_monthly, key.spent_total) == (0, 0, 0)
    assert ApiKeyCharge.objects.get(pk=charge.pk).given_back == BUDGET
    with pytest.raises(DisputeStateError):
        dispute_accept(dispute_id=dispute.pk, user=bob)
    assert disputes_resolve_overdue(now=timezone.now() + timedelta(days=4)) == 0
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_total) == (0, 0)
    assert balance(requester) == START


def test_a_rejection_gives_nothing_back_to_the_key(requester, agent, bob):
    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write"])
    task = settled(requester, agent, api_key=key)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=dispute.pk, user=bob, statement="no")

    dispute_decide(dispute_id=dispute.pk, refund=False, operator="ops")

    assert ApiKey.objects.get(pk=key.pk).spent_total == COST


def test_a_refund_after_the_charges_day_lowers_the_lifetime_total(requester, agent, bob):
    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write"])
    task = settled(requester, agent, api_key=key)
    # Charged yesterday, nothing since: the key's day window is yesterday's.
    yesterday = timezone.now().date() - timedelta(days=1)
    ApiKeyCharge.objects.filter(task=task).update(day=yesterday)
    ApiKey.objects.filter(pk=key.pk).update(spent_daily_on=yesterday)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    key.refresh_from_db()
    # Yesterday's window reads zero today anyway; it stays within the lower total.
    assert (key.spent_total, key.spent_daily, key.spent_daily_on) == (0, 0, yesterday)
    assert api_key_spending(key).daily == 0


@pytest.fixture
def keyed_channel(requester, agent, bob):
    """A channel the requester's key opened (its deposit counted), with one task paid by it."""
    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write", "channels:write"])
    key_register(user_id=requester.pk, public_key=public(KEY))
    channel = api_key_channel_open(
        key=key,
        requester_user_id=requester.pk,
        agent_id=agent.pk,
        payee_user_id=bob.pk,
        deposit=DEPOSIT,
    )
    task = settled(requester, agent, **paid_by(channel, 1, BUDGET), api_key=key)
    assert not ApiKeyCharge.objects.filter(task=task).exists()  # the deposit counted
    return key, channel, task


def test_a_settled_channels_refund_goes_back_to_the_key_that_opened_it(keyed_channel, bob):
    key, channel, task = keyed_channel
    channel_close(channel_id=channel.pk, by_user_id=key.user_id)
    # The channel settled; its change (deposit − cost) is not given back to the key yet.
    assert ApiKey.objects.get(pk=key.pk).spent_total == DEPOSIT
    dispute = dispute_file(task_id=task.pk, user=key.user, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    charge = ApiKeyCharge.objects.get(channel=channel)
    assert (charge.given_back, charge.settled_at is not None) == (DEPOSIT, True)
    assert ApiKey.objects.get(pk=key.pk).spent_total == 0
    api_keys_settle_channels(user=key.user)  # nothing left to give back
    assert ApiKey.objects.get(pk=key.pk).spent_total == 0


def test_an_open_channels_refund_reaches_the_key_when_the_channel_settles(keyed_channel, bob):
    key, channel, task = keyed_channel
    dispute = dispute_file(task_id=task.pk, user=key.user, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    assert ApiKey.objects.get(pk=key.pk).spent_total == DEPOSIT  # the channel still holds it
    channel_close(channel_id=channel.pk, by_user_id=key.user_id)
    api_keys_settle_channels(user=key.user)
    assert ApiKey.objects.get(pk=key.pk).spent_total == 0
    assert ApiKeyCharge.objects.get(channel=channel).given_back == DEPOSIT


# --- the audit's per-task check -----------------------------------------------------------


def test_the_audit_checks_every_disputed_tasks_money(requester, agent, bob):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    rejected = settled(requester, agent)
    other = dispute_file(task_id=rejected.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=other.pk, user=bob, statement="no")
    dispute_decide(dispute_id=other.pk, refund=False, operator="ops")

    report = ledger_audit()

    assert report.ok, report.violations


@pytest.mark.corrupts_ledger
def test_the_audit_fails_when_a_disputed_tasks_refund_went_to_someone_else(
    requester, agent, bob, charlie
):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    assert ledger_audit().ok
    # One ledger line changed: the fee's refund credited to charlie instead, with both
    # balances kept consistent with the lines, so only the per-task check can tell.
    line = Transfer.objects.get(task=task, kind="dispute_fee_refund")
    fee = line.amount
    Transfer.objects.filter(pk=line.pk).update(credit_account_id=wallet_id(user_id=charlie.pk))
    Account.objects.filter(user=requester).update(balance=START - fee)
    Account.objects.filter(user=charlie).update(balance=fee)

    report = ledger_audit()

    assert report.violations == [
        f"task {task.pk}: the requester lost {fee} µCR, the owner gained 0 µCR and the "
        f"platform 0 µCR, and {{'other': {fee}}} went elsewhere; it cost 0 µCR after "
        "disputes"
    ]
