"""The ledger audit's checks of fees, held earnings' fees and refunded disputes: every normal
flow passes them, and each one reports a ledger corrupted on purpose, by itself, clearly."""

from __future__ import annotations

import pytest
from django.db.models import F

from escrow.audit import ledger_audit
from escrow.channels import channel_close, channel_open, key_register
from escrow.models import Account, Dispute, Earning, Escrow, Transfer
from escrow.services import deposit_create, system_account_id, system_balance
from marketplace.disputes import dispute_accept, dispute_contest, dispute_decide, dispute_file
from tests.factories import FEE, KEY, SHARE, balance, public, settled, sign
from tests.test_dispute_edges import BUDGET, COST, DEPOSIT, START, make_agent


@pytest.fixture
def agent(bob):
    return make_agent(bob, "echo")


@pytest.fixture
def requester(alice):
    deposit_create(user_id=alice.pk, amount=START)
    key_register(user_id=alice.pk, public_key=public(KEY))
    return alice


@pytest.fixture
def channel(requester, agent, bob):
    return channel_open(
        requester_user_id=requester.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=DEPOSIT
    )


def on_channel(requester, agent, channel, nonce: int):
    return settled(
        requester,
        agent,
        payment="channel",
        channel=str(channel.pk),
        voucher=sign(channel.pk, nonce, BUDGET * nonce),
    )


def refunded_in_channel(requester, agent, bob, channel):
    """A channel task whose dispute was accepted before its channel settled."""
    task = on_channel(requester, agent, channel, 1)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    return dispute_accept(dispute_id=dispute.pk, user=bob)


def refunded_from_the_ledger(requester, agent, bob):
    task = settled(requester, agent)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    return dispute_accept(dispute_id=dispute.pk, user=bob)


def test_every_kind_of_flow_passes_the_new_checks(requester, agent, bob, channel):
    settled(requester, agent)  # held
    in_channel = refunded_in_channel(requester, agent, bob, channel)
    kept = on_channel(requester, agent, channel, 2)
    frozen = on_channel(requester, agent, channel, 3)
    pending = dispute_file(task_id=frozen.pk, user=requester, reason="wrong")
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)  # 2 held, 1 frozen
    from_ledger = refunded_from_the_ledger(requester, agent, bob)
    rejected = dispute_file(task_id=settled(requester, agent).pk, user=requester, reason="w")
    dispute_contest(dispute_id=rejected.pk, user=bob, statement="no")
    dispute_decide(dispute_id=rejected.pk, refund=False, operator="ops")
    dispute_decide(
        dispute_id=dispute_contest(dispute_id=pending.pk, user=bob, statement="no").pk,
        refund=True,
        operator="ops",
    )

    report = ledger_audit()

    assert report.ok, report.violations
    assert (in_channel.refunded, from_ledger.refunded) == (COST, COST)
    statuses = sorted(Earning.objects.values_list("status", flat=True))
    assert statuses == ["held", "held", "held", "refunded", "refunded"]
    assert Earning.objects.get(task=kept).fee == FEE
    # 6 tasks settled, 3 refunded: the platform keeps the fees of 3.
    assert system_balance("platform_fees") == 3 * FEE
    assert balance(requester) == START - 3 * COST


# --- fees charged − fees refunded = the platform fee accounts ---------------------------------


@pytest.mark.corrupts_ledger
@pytest.mark.parametrize("kind", ["escrow_fee", "channel_fee"])
def test_a_fee_credited_outside_the_platform_is_reported(requester, agent, bob, channel, kind):
    settled(requester, agent)
    on_channel(requester, agent, channel, 1)
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert ledger_audit().ok
    # The fee's line now credits the outside world, both balances kept consistent with
    # their lines: only the fee check can tell.
    line = Transfer.objects.get(kind=kind)
    external = system_account_id("external", 0)
    Transfer.objects.filter(pk=line.pk).update(credit_account_id=external)
    Account.objects.filter(pk=line.credit_account_id).update(balance=F("balance") - FEE)
    Account.objects.filter(pk=external).update(balance=F("balance") + FEE)

    report = ledger_audit()

    assert report.violations == [
        f"the platform fee accounts hold {FEE} µCR but fees charged ({2 * FEE} µCR) − fees "
        f"refunded (0 µCR) = {2 * FEE} µCR"
    ]


@pytest.mark.corrupts_ledger
def test_a_fee_refund_paid_from_elsewhere_is_reported(requester, agent, bob):
    task = refunded_from_the_ledger(requester, agent, bob).task
    assert ledger_audit().ok
    # The fee's refund now comes out of the outside world: the platform keeps the fee.
    line = Transfer.objects.get(task=task, kind="dispute_fee_refund")
    external = system_account_id("external", 0)
    Transfer.objects.filter(pk=line.pk).update(debit_account_id=external)
    Account.objects.filter(pk=line.debit_account_id).update(balance=F("balance") + FEE)
    Account.objects.filter(pk=external).update(balance=F("balance") - FEE)

    violations = ledger_audit().violations

    assert (
        f"the platform fee accounts hold {FEE} µCR but fees charged ({FEE} µCR) − fees "
        f"refunded ({FEE} µCR) = 0 µCR"
    ) in violations


# --- each earning's fee = its escrow's fee ----------------------------------------------------


@pytest.mark.corrupts_ledger
@pytest.mark.parametrize("payment", ["escrow", "channel"])
def test_an_earning_whose_fee_is_not_its_escrows_is_reported(
    requester, agent, bob, channel, payment
):
    if payment == "escrow":
        task = settled(requester, agent)
    else:
        task = on_channel(requester, agent, channel, 1)
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert ledger_audit().ok
    earning = Earning.objects.get(task=task)
    Earning.objects.filter(pk=earning.pk).update(fee=FEE + 1)

    report = ledger_audit()

    assert report.violations == [
        f"earning {earning.pk} (held) of task {task.pk} holds a share of {SHARE} µCR and a "
        f"fee of {FEE + 1} µCR; its escrow's cost − fee and fee are {SHARE} µCR and {FEE} µCR"
    ]


@pytest.mark.corrupts_ledger
def test_a_refunded_earning_whose_escrow_fee_changed_is_reported(requester, agent, bob):
    task = refunded_from_the_ledger(requester, agent, bob).task
    earning = Earning.objects.get(task=task)
    # Escrow and earning changed together, the escrow's own lines checked against it too.
    Escrow.objects.filter(task=task).update(cost=COST, fee=FEE - 1)

    violations = ledger_audit().violations

    assert (
        f"earning {earning.pk} (refunded) of task {task.pk} holds a share of {SHARE} µCR and a "
        f"fee of {FEE} µCR; its escrow's cost − fee and fee are {SHARE + 1} µCR and {FEE - 1} µCR"
    ) in violations


# --- each refunded dispute moved exactly its `refunded` ---------------------------------------


@pytest.mark.corrupts_ledger
def test_a_ledger_refund_that_moved_other_than_refunded_is_reported(requester, agent, bob):
    dispute = refunded_from_the_ledger(requester, agent, bob)
    Dispute.objects.filter(pk=dispute.pk).update(refunded=COST - 1)

    report = ledger_audit()

    assert report.violations == [
        f"dispute {dispute.pk} (accepted) refunded {COST - 1} µCR of a task that cost {COST} "
        f"µCR; its refund lines moved {COST} µCR"
    ]


@pytest.mark.corrupts_ledger
@pytest.mark.parametrize("settle", [False, True], ids=["open", "settled"])
def test_a_channel_refund_other_than_refunded_is_reported(requester, agent, bob, channel, settle):
    dispute = refunded_in_channel(requester, agent, bob, channel)
    if settle:
        channel_close(channel_id=channel.pk, by_user_id=requester.pk)
    assert ledger_audit().ok
    Dispute.objects.filter(pk=dispute.pk).update(refunded=COST + 1)

    report = ledger_audit()

    assert report.violations == [
        f"dispute {dispute.pk} (accepted) refunded {COST + 1} µCR of a task that cost {COST} "
        f"µCR; its refund lines moved 0 µCR, and its escrow on channel {channel.pk} counts "
        "0 µCR (fee 0 µCR) in the channel's redeemed amount"
    ]


@pytest.mark.corrupts_ledger
def test_a_channel_refund_that_never_lowered_the_channel_is_reported(
    requester, agent, bob, channel
):
    task = on_channel(requester, agent, channel, 1)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    # Marked refunded, but the channel still redeems the task's cost.
    Dispute.objects.filter(pk=dispute.pk).update(status="accepted", refunded=COST)

    report = ledger_audit()

    assert report.violations == [
        f"dispute {dispute.pk} (accepted) refunded {COST} µCR of a task that cost {COST} "
        f"µCR; its refund lines moved 0 µCR, and its escrow on channel {channel.pk} counts "
        f"{COST} µCR (fee {FEE} µCR) in the channel's redeemed amount"
    ]
