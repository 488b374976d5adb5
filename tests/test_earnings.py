"""Held earnings: an owner's share waits EARNINGS_HOLD_SECONDS, then the sweep pays it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from escrow.channels import channel_close
from escrow.earnings import earnings_release_due, pending_earnings
from escrow.models import Earning, Escrow, Transfer
from escrow.services import system_account_id, system_balance, wallet_id
from execution.runs import Execution
from marketplace.models import Agent
from marketplace.selectors import wallet_summary
from tests.factories import (
    FEE,
    SHARE,
    AgentBinaryFactory,
    AgentFactory,
    balance,
    channel_opened,
    channel_tasks,
    held_for,
    settled,
)


def later(seconds: int):
    return timezone.now() + timedelta(seconds=seconds)


def earnings_account() -> int:
    return system_balance("earnings")


def test_an_escrow_settlement_holds_the_owners_share(requester, agent, bob, settings):
    before = timezone.now()
    task = settled(requester, agent)

    earning = Earning.objects.get(task=task)
    assert (earning.status, earning.amount, earning.fee) == ("held", SHARE, FEE)
    assert earning.wallet_id == wallet_id(user_id=bob.pk)
    hold = timedelta(seconds=settings.EARNINGS_HOLD_SECONDS)
    assert before + hold <= earning.release_at <= timezone.now() + hold
    assert (balance(bob), held_for(bob), earnings_account()) == (0, SHARE, SHARE)
    assert balance(requester) == 10_000_000 - 3_470
    payout = Transfer.objects.get(task=task, kind="escrow_payout")
    assert (payout.credit_account_id, payout.amount) == (
        system_account_id("earnings", Escrow.objects.get(task=task).shard),
        SHARE,
    )


def test_a_failed_task_holds_nothing(requester, agent, bob):
    settled(requester, agent, Execution(reason="trap", detail="boom"))
    assert (Earning.objects.count(), earnings_account(), balance(bob)) == (0, 0, 0)


def test_with_no_hold_the_share_goes_straight_to_the_wallet(requester, agent, bob, settings):
    settings.EARNINGS_HOLD_SECONDS = 0
    settled(requester, agent)
    assert (Earning.objects.count(), balance(bob), earnings_account()) == (0, SHARE, 0)


def test_the_sweep_releases_only_matured_earnings_one_transfer_per_owner(
    requester, agent, bob, charlie, settings
):
    other = AgentFactory.create(owner=charlie, slug="other", base_fee=1_000, fuel_price=2_000)
    Agent.objects.filter(pk=other.pk).update(current_binary=AgentBinaryFactory.create(agent=other))
    other.refresh_from_db()
    settings.EARNINGS_HOLD_SECONDS = 3600
    first, second = settled(requester, agent), settled(requester, agent)
    third = settled(requester, other)
    settings.EARNINGS_HOLD_SECONDS = 3 * 3600
    young = settled(requester, agent)

    assert earnings_release_due(now=later(1800)) == 0
    assert earnings_release_due(now=later(2 * 3600), batch=2) == 3  # two batches

    statuses = dict(Earning.objects.values_list("task_id", "status"))
    assert statuses == {
        first.pk: "released",
        second.pk: "released",
        third.pk: "released",
        young.pk: "held",
    }
    assert (balance(bob), held_for(bob)) == (2 * SHARE, SHARE)
    assert (balance(charlie), held_for(charlie)) == (SHARE, 0)
    assert earnings_account() == SHARE
    released = Transfer.objects.filter(kind="earnings_release")
    by_wallet = sorted(released.values_list("credit_account__user__username", "amount"))
    # batch 1 (first, second) pays bob once per earnings shard their tasks settled in;
    # batch 2 (third) pays charlie
    shards = {Escrow.objects.get(task=task).shard for task in (first, second)}
    bob_paid = [SHARE] * 2 if len(shards) == 2 else [2 * SHARE]
    assert by_wallet == [*(("bob", paid) for paid in bob_paid), ("charlie", SHARE)]
    assert earnings_release_due(now=later(2 * 3600)) == 0


def test_the_wallet_shows_pending_earnings_and_the_next_release(
    requester, agent, bob, client, settings
):
    task = settled(requester, agent)
    release_at = Earning.objects.get(task=task).release_at
    assert pending_earnings(wallet_id=wallet_id(user_id=bob.pk)) == {
        "pending": SHARE,
        "next_release_at": release_at,
    }
    summary = wallet_summary(bob)
    assert (summary.balance, summary.pending_earnings, summary.next_release_at) == (
        0,
        SHARE,
        release_at,
    )
    client.force_login(bob)
    body = client.get("/api/v1/wallet/").json()
    assert (body["balance"], body["pending_earnings"]) == (0, SHARE)
    assert body["next_release_at"] is not None

    earnings_release_due(now=release_at)
    body = client.get("/api/v1/wallet/").json()
    assert (body["balance"], body["pending_earnings"], body["next_release_at"]) == (SHARE, 0, None)


@pytest.fixture
def channel(requester, agent, bob):
    return channel_opened(requester, agent, bob)


def test_a_channel_payout_holds_one_earning_per_task(requester, agent, bob, channel):
    tasks = channel_tasks(requester, agent, channel)
    assert Earning.objects.count() == 0  # nothing moves while the channel is open
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)

    rows = sorted(Earning.objects.values_list("task_id", "amount", "fee", "status", "channel_id"))
    assert rows == sorted((task.pk, SHARE, FEE, "held", channel.pk) for task in tasks)
    assert (balance(bob), held_for(bob), earnings_account()) == (0, 2 * SHARE, 2 * SHARE)
    assert balance(requester) == 10_000_000 - 2 * 3_470

    earnings_release_due(now=later(10**6))
    assert (balance(bob), held_for(bob), earnings_account()) == (2 * SHARE, 0, 0)


def test_the_sweep_is_scheduled_every_minute(requester, agent, bob):
    from django_q.models import Schedule

    from execution.tasks import sweep_earnings

    schedule = Schedule.objects.get(func="execution.tasks.sweep_earnings")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 1, -1)
    settled(requester, agent)
    Earning.objects.update(release_at=timezone.now())
    assert sweep_earnings() == {"released": 1, "disputes_accepted": 0}
    assert balance(bob) == SHARE
