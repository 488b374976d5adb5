"""Disputes at their edges: a broken dispute never stalls the earnings sweep, nothing held
means nothing to dispute, the response deadline closes the contest too, auto-accept refunds
only what is still open, and a refund reaches the key that paid for the task."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from escrow import disputes as money
from escrow.channels import channel_close, channel_open, key_register
from escrow.disputes import DisputeStateError, DisputeWindowClosed
from escrow.models import Dispute, Earning, PaymentChannel
from escrow.services import deposit_create, system_balance
from execution.tasks import sweep_earnings
from marketplace import disputes as flows
from marketplace.apikey_models import ApiKey
from marketplace.apikeys.lifecycle import api_key_create
from marketplace.apikeys.spending import api_key_channel_open, api_keys_settle_channels
from marketplace.disputes import (
    dispute_accept,
    dispute_contest,
    dispute_file,
    disputes_resolve_overdue,
)
from marketplace.models import Agent
from tests.api.conftest import client_for, error
from tests.factories import (
    FEE,
    KEY,
    SHARE,
    AgentBinaryFactory,
    AgentFactory,
    balance,
    held_for,
    public,
    settled,
    sign,
)

COST = SHARE + FEE  # 3_470
START = 10_000_000
BUDGET = 100_000
DEPOSIT = 1_000_000


def make_agent(owner, slug: str) -> Agent:
    agent = AgentFactory.create(owner=owner, slug=slug, base_fee=1_000, fuel_price=2_000)
    Agent.objects.filter(pk=agent.pk).update(current_binary=AgentBinaryFactory.create(agent=agent))
    agent.refresh_from_db()
    return agent


@pytest.fixture
def agent(bob):
    return make_agent(bob, "echo")


@pytest.fixture
def requester(alice):
    deposit_create(user_id=alice.pk, amount=START)
    key_register(user_id=alice.pk, public_key=public(KEY))
    return alice


def open_channel(requester, agent, owner, key=None) -> PaymentChannel:
    """A channel to `agent`, opened by the requester's session or, with `key`, by that key."""
    if key is not None:
        return api_key_channel_open(
            key=key,
            requester_user_id=requester.pk,
            agent_id=agent.pk,
            payee_user_id=owner.pk,
            deposit=DEPOSIT,
        )
    return channel_open(
        requester_user_id=requester.pk, agent_id=agent.pk, payee_user_id=owner.pk, deposit=DEPOSIT
    )


def on_channel(requester, agent, channel, nonce: int = 1, **options):
    return settled(
        requester,
        agent,
        payment="channel",
        channel=str(channel.pk),
        voucher=sign(channel.pk, nonce, BUDGET * nonce),
        **options,
    )


def overdue(*disputes) -> None:
    Dispute.objects.filter(pk__in=[d.pk for d in disputes]).update(
        respond_by=timezone.now() - timedelta(seconds=1)
    )


def matured() -> None:
    Earning.objects.filter(status="held").update(release_at=timezone.now() - timedelta(seconds=1))


def counters(key) -> tuple[int, int, int]:
    key = ApiKey.objects.get(pk=key.pk)
    return (key.spent_total, key.spent_daily, key.spent_monthly)


# --- 1. the sweep resolves each overdue dispute on its own ------------------------------------


def broken_dispute(requester, agent, monkeypatch) -> Dispute:
    """A dispute whose refund fails (its held earning can't be found, as a channel task's
    could not once its channel paid its share out unheld)."""
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    refund = money._refund_earning

    def fails_for_it(disputed, **kwargs):
        if disputed.pk == dispute.pk:
            raise Earning.DoesNotExist("no earning held for the task")
        return refund(disputed, **kwargs)

    monkeypatch.setattr(money, "_refund_earning", fails_for_it)
    return dispute


def test_a_broken_overdue_dispute_never_stops_other_owners_earnings(
    requester, agent, bob, charlie, monkeypatch
):
    other = make_agent(charlie, "other")
    bobs, charlies = settled(requester, agent), settled(requester, other)
    refundable = dispute_file(task_id=settled(requester, other).pk, user=requester, reason="w")
    # The newest dispute is read first: the broken one comes before the refundable one.
    broken = broken_dispute(requester, agent, monkeypatch)
    overdue(refundable, broken)
    matured()

    result = sweep_earnings()

    assert result == {"released": 2, "disputes_accepted": 1, "disputes_failed": 1}
    assert (balance(bob), held_for(bob)) == (SHARE, SHARE)  # the broken one's stays frozen
    assert (balance(charlie), held_for(charlie)) == (SHARE, 0)
    assert dict(Earning.objects.values_list("task_id", "status")) == {
        bobs.pk: "released",
        charlies.pk: "released",
        refundable.task_id: "refunded",
        broken.task_id: "frozen",
    }
    assert Dispute.objects.get(pk=refundable.pk).status == "accepted"
    assert Dispute.objects.get(pk=broken.pk).status == "open"  # left for an operator, logged
    # alice paid four tasks and got one back.
    assert balance(requester) == START - 3 * COST


def test_a_channel_settling_with_nothing_held_still_holds_a_disputed_tasks_share(
    requester, agent, bob, settings
):
    """A channel task disputed while the hold was on, its channel settling after the hold was
    turned off: the share stays frozen for the dispute, which then refunds it exactly. (The
    channel used to pay it out unheld, and the dispute could then never be resolved.)"""
    channel = open_channel(requester, agent, bob)
    disputed, kept = (
        on_channel(requester, agent, channel),
        on_channel(requester, agent, channel, nonce=2),
    )
    dispute = dispute_file(task_id=disputed.pk, user=requester, reason="wrong")
    settings.EARNINGS_HOLD_SECONDS = 0
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert dict(Earning.objects.values_list("task_id", "status")) == {
        disputed.pk: "frozen",
        kept.pk: "held",  # released by the next sweep: nothing is held any more
    }
    assert (balance(bob), held_for(bob)) == (0, 2 * SHARE)
    assert sweep_earnings()["released"] == 1
    assert (balance(bob), held_for(bob)) == (SHARE, SHARE)
    before = balance(requester)
    dispute_accept(dispute_id=dispute.pk, user=bob)
    assert Earning.objects.get(task=disputed).status == "refunded"
    assert (balance(bob), held_for(bob)) == (SHARE, 0)
    assert balance(requester) == before + COST


def test_any_exception_in_one_dispute_is_counted_and_the_others_go_on(
    requester, agent, bob, monkeypatch, caplog
):
    first = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    second = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    kept = settled(requester, agent)
    overdue(first, second)
    matured()
    score = flows._score

    def fails_for_the_second(dispute):
        if dispute.pk == second.pk:
            raise RuntimeError("reputation row missing")
        score(dispute)

    monkeypatch.setattr(flows, "_score", fails_for_the_second)

    assert flows.disputes_accept_overdue() == {"accepted": 1, "failed": 1}
    assert earnings_released_for(kept) == "held"  # matured, but the sweep itself comes next
    assert sweep_earnings() == {"released": 1, "disputes_accepted": 0, "disputes_failed": 1}

    assert Dispute.objects.get(pk=first.pk).status == "accepted"
    assert Dispute.objects.get(pk=second.pk).status == "open"  # rolled back whole
    assert Earning.objects.get(task_id=second.task_id).status == "frozen"
    assert (balance(bob), held_for(bob)) == (SHARE, SHARE)
    assert balance(requester) == START - 2 * COST
    assert f"dispute {second.pk}" in caplog.text and "reputation row missing" in caplog.text


def earnings_released_for(task) -> str:
    return Earning.objects.get(task=task).status


def test_a_clean_sweep_reports_no_failures(requester, agent, bob):
    dispute = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    overdue(dispute)
    assert disputes_resolve_overdue() == 1
    assert sweep_earnings() == {"released": 0, "disputes_accepted": 0}


# --- 2. nothing held, nothing to dispute ------------------------------------------------------


def test_with_no_hold_an_open_channels_task_cannot_be_disputed(requester, agent, bob, settings):
    settings.EARNINGS_HOLD_SECONDS = 0
    channel = open_channel(requester, agent, bob)
    task = on_channel(requester, agent, channel)

    with pytest.raises(DisputeWindowClosed) as closed:
        dispute_file(task_id=task.pk, user=requester, reason="wrong")

    assert (closed.value.code, closed.value.status) == ("dispute_window_closed", 409)
    assert not Dispute.objects.exists()
    channel.refresh_from_db()
    assert (channel.redeemed, channel.fees) == (COST, FEE)
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert (balance(bob), balance(requester)) == (SHARE, START - COST)


def test_with_no_hold_the_api_refuses_a_channel_task_with_409(requester, agent, bob, settings):
    settings.EARNINGS_HOLD_SECONDS = 0
    task = on_channel(requester, agent, open_channel(requester, agent, bob))

    response = client_for(requester).post(
        f"/api/v1/tasks/{task.pk}/dispute/", {"reason": "wrong"}, format="json"
    )

    assert error(response) == (409, "dispute_window_closed")
    assert not Dispute.objects.exists()


def test_with_no_hold_a_settled_channels_task_cannot_be_disputed(requester, agent, bob, settings):
    settings.EARNINGS_HOLD_SECONDS = 0
    channel = open_channel(requester, agent, bob)
    task = on_channel(requester, agent, channel)
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)

    with pytest.raises(DisputeWindowClosed):
        dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert (Dispute.objects.count(), balance(bob)) == (0, SHARE)


def test_with_no_hold_an_escrow_task_cannot_be_disputed(requester, agent, bob, settings):
    settings.EARNINGS_HOLD_SECONDS = 0
    task = settled(requester, agent)
    with pytest.raises(DisputeWindowClosed):
        dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert (Dispute.objects.count(), balance(bob)) == (0, SHARE)


# --- 3. the response deadline closes the contest ----------------------------------------------


@pytest.fixture
def late(requester, agent) -> Dispute:
    """An open dispute whose respond_by has passed (the sweep has not accepted it yet)."""
    dispute = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    overdue(dispute)
    return dispute


def test_a_contest_after_respond_by_is_refused(late, bob):
    with pytest.raises(DisputeWindowClosed) as closed:
        dispute_contest(dispute_id=late.pk, user=bob, statement="it was right")
    assert (closed.value.code, closed.value.status) == ("dispute_window_closed", 409)
    late.refresh_from_db()
    assert (late.status, late.statement) == ("open", "")


def test_the_api_refuses_a_late_contest_with_409(late, bob, requester):
    response = client_for(bob).post(
        f"/api/v1/disputes/{late.pk}/contest/", {"statement": "right"}, format="json"
    )
    assert error(response) == (409, "dispute_window_closed")
    assert Dispute.objects.get(pk=late.pk).status == "open"
    # The deadline's own outcome follows: the sweep accepts it.
    assert disputes_resolve_overdue() == 1
    assert balance(requester) == START


def test_the_page_refuses_a_late_contest(late, bob):
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(bob)
    response = client.post(
        reverse("dispute-contest", args=[late.pk]), {"statement": "right"}, HTTP_HX_REQUEST="true"
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert "dispute_window_closed" in body
    assert "HX-Trigger" not in response
    assert Dispute.objects.get(pk=late.pk).status == "open"


def test_a_contest_before_respond_by_still_works(requester, agent, bob):
    dispute = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    Dispute.objects.filter(pk=dispute.pk).update(respond_by=timezone.now() + timedelta(seconds=60))
    assert dispute_contest(dispute_id=dispute.pk, user=bob, statement="no").status == "contested"


# --- 4. auto-accept refunds only a dispute still open -----------------------------------------


def contest_during_the_sweep(monkeypatch, dispute, contest) -> None:
    """Contest the dispute after the sweep read it as overdue, just before its refund."""
    lock = flows.dispute_key_lock

    def contest_first(*, task_id):
        contest(dispute.pk)
        return lock(task_id=task_id)

    monkeypatch.setattr(flows, "dispute_key_lock", contest_first)


def test_a_dispute_contested_after_the_sweeps_read_is_not_auto_refunded(
    requester, agent, bob, monkeypatch
):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    contest_during_the_sweep(
        monkeypatch, dispute, lambda pk: money.dispute_contest(dispute_id=pk, statement="no")
    )

    # The sweep's clock is past respond_by; the owner's (a moment earlier) was not.
    done = disputes_resolve_overdue(now=dispute.respond_by + timedelta(seconds=1))

    assert done == 0
    # Here the contest ran in the sweep's own transaction, which the refused refund rolled
    # back with it; the PostgreSQL test below commits it from another connection.
    dispute.refresh_from_db()
    assert (dispute.status, dispute.refunded) == ("open", 0)
    assert Earning.objects.get(task=task).status == "frozen"
    assert (balance(requester), system_balance("platform_fees")) == (START - COST, FEE)
    assert dispute_contest(dispute_id=dispute.pk, user=bob, statement="no").status == "contested"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_contest_committed_while_the_sweep_runs_is_not_auto_refunded(monkeypatch):
    """The owner's contest commits on its own connection while the sweep's transaction is
    between its read and its refund: the refund's conditional UPDATE sees it and refuses."""
    from tests.factories import UserFactory

    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=START)
    task = settled(alice, make_agent(bob, "echo"))
    dispute = dispute_file(task_id=task.pk, user=alice, reason="wrong")
    seen: list[str] = []

    def contest_elsewhere(pk: int) -> None:
        assert connection.in_atomic_block  # the sweep's transaction is open

        def owner() -> None:
            try:
                dispute_contest(dispute_id=pk, user=bob, statement="no")
                seen.append("contested")
            finally:
                connection.close()

        thread = threading.Thread(target=owner)
        thread.start()
        thread.join(timeout=30)

    contest_during_the_sweep(monkeypatch, dispute, contest_elsewhere)

    done = disputes_resolve_overdue(now=dispute.respond_by + timedelta(seconds=1))

    assert (seen, done) == (["contested"], 0)
    dispute.refresh_from_db()
    assert (dispute.status, dispute.refunded) == ("contested", 0)
    assert Earning.objects.get(task=task).status == "frozen"
    assert balance(alice) == START - COST


# --- 5. the refund reaches the key that paid for the task -------------------------------------


@pytest.fixture
def key(requester):
    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write"])
    return key


@pytest.fixture
def other_key(requester):
    key, _ = api_key_create(user=requester, name="opener", scopes=["channels:write"])
    return key


@pytest.mark.parametrize("settle_first", [False, True], ids=["open", "settled"])
def test_a_refund_reaches_the_key_that_paid_on_a_channel_the_session_opened(
    requester, agent, bob, key, settle_first
):
    channel = open_channel(requester, agent, bob)
    task = on_channel(requester, agent, channel, api_key=key)
    assert counters(key) == (COST, COST, COST)
    if settle_first:
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    assert dispute_accept(dispute_id=dispute.pk, user=bob).refunded == COST

    assert counters(key) == (0, 0, 0)
    if not settle_first:
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    api_keys_settle_channels(user=requester)
    assert counters(key) == (0, 0, 0)
    assert balance(requester) == START


@pytest.mark.parametrize("settle_first", [False, True], ids=["open", "settled"])
def test_a_refund_reaches_the_key_that_paid_on_a_channel_another_key_opened(
    requester, agent, bob, key, other_key, settle_first
):
    channel = open_channel(requester, agent, bob, key=other_key)
    task = on_channel(requester, agent, channel, api_key=key)
    assert (counters(key), counters(other_key)) == ((COST,) * 3, (DEPOSIT,) * 3)
    if settle_first:
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    assert counters(key) == (0, 0, 0)
    if not settle_first:
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    api_keys_settle_channels(user=requester)
    assert counters(key) == (0, 0, 0)
    # The opener's deposit came back to the wallet but for what the channel redeemed: the
    # task's cost when the refund came from the ledger after the channel settled, nothing
    # when it came off the open channel's redeemed amount.
    left = (COST,) * 3 if settle_first else (0, 0, 0)
    assert counters(other_key) == left
    assert balance(requester) == START


def test_a_session_task_on_a_keys_channel_gives_back_to_the_opener(requester, agent, bob, key):
    channel = open_channel(requester, agent, bob, key=key)
    task = on_channel(requester, agent, channel)
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    dispute_accept(dispute_id=dispute.pk, user=bob)

    assert counters(key) == (0, 0, 0)


def test_a_failed_refund_gives_nothing_back_to_the_key(requester, agent, bob, key, monkeypatch):
    task = settled(requester, agent, api_key=key)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")

    def refused(dispute) -> None:
        raise DisputeStateError()

    monkeypatch.setattr(flows, "_score", refused)
    with pytest.raises(DisputeStateError):
        dispute_accept(dispute_id=dispute.pk, user=bob)
    assert counters(key) == (COST, COST, COST)
