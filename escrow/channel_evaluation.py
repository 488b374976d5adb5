"""A channel-paid task with an evaluator (SPEC §21): the budget covers both runs, and the
voucher covers the budget, so the evaluator is paid from the channel too.

- The task's settlement redeems its cost, as any channel task's does, and its budget leaves
  the channel's reservation; but the task stays in flight (`channel_finish_evaluated`), so
  that the channel cannot settle, and pay the owner's share out, before the verdict.
- In the same transaction the budget's rest leaves the deposit (`drawn`) into the escrow of
  the evaluator's run (`escrow_open_from_channel`): one ledger line, channels → escrow. The
  run is then an ordinary escrow task: its cost paid to the evaluator's owner, its refund
  to the requester's wallet. The channel pays only its own agent's owner, so this is the
  one way to pay another owner from it without a second payee at its settlement.
- The verdict ends the task's flight (`channel_verdict`). A rejection takes the task's cost
  and fee off what the channel redeemed, as an accepted dispute does on an open channel:
  the requester gets it back when the channel settles.

So `redeemed + drawn + reserved` never exceeds what the latest voucher authorized (a
constraint), and at its settlement the channel gives back `deposit − redeemed − drawn`.
The models of other apps are named by lookups, not imported: this app imports no other.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from escrow.channels import channel_is_due, channel_settle_if_due
from escrow.errors import ChannelNotOpen, InvalidAmount
from escrow.ledger import Leg, ledger_post, validate_amount
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.system_accounts import shard_for, system_account_id


def channel_finish_evaluated(*, channel_id: Any, budget: int, cost: int, fee: int) -> None:
    """An evaluated task succeeded: redeem its cost and release its budget's reservation;
    it stays in flight until its verdict. The rest is drawn in the same transaction."""
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    if cost > budget or fee > cost:
        raise InvalidAmount(f"cost {cost} and fee {fee} do not fit the budget {budget}.")
    won = PaymentChannel.objects.filter(
        pk=channel_id, in_flight__gt=0, reserved__gte=budget
    ).update(redeemed=F("redeemed") + cost, fees=F("fees") + fee, reserved=F("reserved") - budget)
    if not won:
        raise ChannelNotOpen("The channel has no such task in flight.")


def escrow_open_from_channel(
    *, channel_id: Any, payer_id: int, payee_id: int, amount: int, task_id: Any
) -> Escrow:
    """The escrow of the evaluator's run, funded from the channel's deposit: `amount` is
    drawn from it (channels → escrow). A refund of the run goes to `payer_id`, the
    requester's wallet."""
    validate_amount(amount)
    shard = PaymentChannel.objects.values_list("shard", flat=True).get(pk=channel_id)
    drawn = PaymentChannel.objects.filter(pk=channel_id).update(drawn=F("drawn") + amount)
    assert drawn == 1
    escrow = Escrow.objects.create(
        payer_id=payer_id,
        payee_id=payee_id,
        amount=amount,
        task_id=task_id,
        status=Escrow.Status.FUNDED,
        funded_at=timezone.now(),
        shard=shard_for(task_id),
    )
    ledger_post(
        [
            Leg(
                system_account_id(Account.Kind.CHANNELS, shard),
                system_account_id(Account.Kind.ESCROW, escrow.shard),
                amount,
                Transfer.Kind.ESCROW_HOLD,
                escrow_id=escrow.pk,
                task_id=task_id,  # the channel's own legs are one of each kind: not named
                memo=f"drawn from channel {channel_id} for the evaluator's run",
            )
        ]
    )
    return escrow


def channel_verdict(*, channel_id: Any, task_id: Any, reject: bool) -> int:
    """The verdict on a channel task: it is no longer in flight, and a rejection takes its
    cost and fee off what the channel redeemed. Returns the µCR given back (the cost on a
    rejection). A closing channel with nothing else in flight settles now. Call it before
    the agent's reputation and the accounts (the lock order: channel, escrows, accounts)."""
    channel = PaymentChannel.objects.select_for_update(no_key=True).get(pk=channel_id)
    cost = fee = 0
    if reject:
        escrow = Escrow.objects.get(task_id=task_id, channel_id=channel_id)
        cost, fee = escrow.cost or 0, escrow.fee or 0
        Escrow.objects.filter(pk=escrow.pk).update(cost=0, fee=0)
    if channel.in_flight <= 0 or channel.redeemed < cost:
        raise ChannelNotOpen("The channel has no such task in flight.")
    channel.redeemed -= cost
    channel.fees -= fee
    channel.in_flight -= 1
    fields = ["redeemed", "fees", "in_flight"]
    if channel.status == PaymentChannel.Status.CLOSING and channel.in_flight == 0:
        channel.closes_at = timezone.now() + timedelta(seconds=settings.CHANNEL_CHALLENGE_SECONDS)
        fields.append("closes_at")
    channel.save(update_fields=fields)
    if channel_is_due(channel):
        channel_settle_if_due(channel_id=channel.pk)
    return cost


def channel_returned(channel: PaymentChannel) -> int:
    """What a settled channel gave back to its requester's wallet: its refund, and the
    refunds of the evaluators' runs drawn from it (SPEC §21) — the deposit less what was
    spent on the agent and on evaluators."""
    back = 0
    if channel.drawn:
        runs = Escrow.objects.filter(task__evaluates__escrow__channel_id=channel.pk)
        back = runs.aggregate(s=Sum("refund"))["s"] or 0
    return channel.deposit - channel.redeemed - channel.drawn + back
