"""A channel task's channel and escrow rows, written in the statement that records its
result (PostgreSQL): see `execution.settlement.task_result_record`.

The channel row is updated only if the task was settled there, the escrow row only if the
channel row was (the lock order: the task, the channel, the escrow); both are conditional
UPDATEs, guarded by the channel's constraints like `escrow.channels.channel_finish_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from escrow.errors import ChannelNotOpen, EscrowStateError
from escrow.models import Escrow, PaymentChannel


@dataclass(frozen=True)
class ChannelFinish:
    """What a channel task's settlement writes on its channel and escrow rows."""

    channel_id: Any
    escrow_id: int
    budget: int
    cost: int
    fee: int
    succeeded: bool

    def sql(self) -> tuple[str, list[Any], str]:
        return channel_finish_sql(self)

    def verdict(self, row: Any) -> Recorded:
        return channel_finished(self, row)

    # What `verdict` accepts, as SQL, for a statement that must refuse itself instead.
    accepted = "EXISTS (SELECT 1 FROM channel) AND (SELECT count(*) FROM escrowed) = 1"


@dataclass(frozen=True)
class Recorded:
    """A result recorded by this caller; `channel_due`: its channel is now due to settle."""

    channel_due: bool = False


def channel_finish_sql(finish: ChannelFinish) -> tuple[str, list[Any], str]:
    """The CTEs (after `settled`), their parameters, and the columns to select."""
    channels, escrows = PaymentChannel._meta.db_table, Escrow._meta.db_table
    now = timezone.now()
    closes_at = now + timedelta(seconds=settings.CHANNEL_CHALLENGE_SECONDS)
    pk = PaymentChannel._meta.pk.get_db_prep_value(finish.channel_id, connection)
    target, amounts = (
        (Escrow.Status.COMPLETED, ", cost = %s, fee = %s, refund = 0")
        if finish.succeeded
        else (Escrow.Status.CANCELLED, "")
    )
    sql = (
        f", channel AS (UPDATE {channels} SET redeemed = redeemed + %s, "  # noqa: S608
        "fees = fees + %s, reserved = reserved - %s, in_flight = in_flight - 1, "
        "closes_at = CASE WHEN status = %s AND in_flight = 1 THEN %s ELSE closes_at END "
        "WHERE id = %s AND in_flight > 0 AND reserved >= %s AND EXISTS (SELECT 1 FROM settled) "
        "RETURNING status, in_flight, closes_at), "
        f"escrowed AS (UPDATE {escrows} SET status = %s, resolved_at = %s{amounts} "
        "WHERE id = %s AND status = %s AND payment = %s AND EXISTS (SELECT 1 FROM channel) "
        "RETURNING id)"
    )
    params: list[Any] = [finish.cost, finish.fee, finish.budget, PaymentChannel.Status.CLOSING]
    params += [closes_at, pk, finish.budget, target, now]
    if finish.succeeded:
        params += [finish.cost, finish.fee]
    params += [finish.escrow_id, Escrow.Status.PENDING, Escrow.Payment.CHANNEL]
    columns = (
        ", (SELECT status FROM channel), (SELECT in_flight FROM channel), "
        "(SELECT closes_at FROM channel), (SELECT count(*) FROM escrowed)"
    )
    return sql, params, columns


def channel_finished(finish: ChannelFinish, row: Any) -> Recorded:
    """The statement's verdict on the channel and escrow rows: a refusal raises, and the
    caller's transaction (the task's result with it) rolls back."""
    status, in_flight, closes_at, escrowed = row
    if status is None:
        raise ChannelNotOpen("The channel has no such task in flight.")
    if escrowed != 1:
        raise EscrowStateError(f"Escrow {finish.escrow_id} is no longer pending.")
    due = (
        status == PaymentChannel.Status.CLOSING
        and in_flight == 0
        and closes_at is not None
        and closes_at <= timezone.now()
    )
    return Recorded(channel_due=due)
