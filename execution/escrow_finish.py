"""An escrow-paid task's money, written in the statement that records its result
(PostgreSQL): see `execution.settlement.task_result_record`.

The escrow row moves out of `funded` only if the task was settled there; the owner's held
earning and the ledger posting follow only if it did. It is what `escrow_release` (or
`escrow_refund`) and `earnings_hold` write, as CTEs of one statement instead of four:
the same conditional UPDATE, the same legs, the same balance CHECK as the guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from escrow.earning_models import Earning
from escrow.errors import EscrowStateError, InvalidAmount
from escrow.holds import release_time
from escrow.ledger import posting_of, posting_sql
from escrow.models import Escrow
from escrow.services import refund_leg, release_legs
from execution.channel_finish import Recorded


@dataclass(frozen=True)
class EscrowFinish:
    """What an escrow-paid task's settlement writes: its escrow row, the owner's held
    earning (if held) and the posting."""

    escrow: Escrow  # as read before: its amount, parties and shard never change
    cost: int
    fee: int
    succeeded: bool

    def sql(self) -> tuple[str, list[Any], str]:
        """The CTEs (after `settled`), their parameters, and the columns to select."""
        row, cost, fee = self.escrow, self.cost, self.fee
        if not 0 <= fee <= cost <= row.amount:
            raise InvalidAmount(f"A cost of {cost} with a fee of {fee} from {row.amount}.")
        now = timezone.now()
        if self.succeeded:
            target, legs_held = Escrow.Status.RELEASED, release_legs(row, cost=cost, fee=fee)
        else:
            target, legs_held = Escrow.Status.REFUNDED, ([refund_leg(row)], False)
            cost = fee = 0
        legs, held = legs_held
        escrows = Escrow._meta.db_table
        sql = (
            f", escrowed AS (UPDATE {escrows} SET status = %s, resolved_at = %s, "  # noqa: S608
            "cost = %s, fee = %s, refund = %s "
            "WHERE id = %s AND status = %s AND payment = %s AND EXISTS (SELECT 1 FROM settled) "
            "RETURNING id)"
        )
        params: list[Any] = [target, now, cost, fee, row.amount - cost]
        params += [row.pk, Escrow.Status.FUNDED, Escrow.Payment.ESCROW]
        if held:  # before the accounts, as `escrow_release` writes it
            sql += (
                f", held AS (INSERT INTO {Earning._meta.db_table} "  # noqa: S608
                "(wallet_id, task_id, amount, fee, status, release_at, created_at) "
                "SELECT %s, %s::uuid, %s, %s, %s, %s, %s FROM escrowed RETURNING 1)"
            )
            params += [row.payee_id, row.task_id, cost - fee, fee, Earning.Status.HELD]
            params += [release_time(now), now]
        changed, rows = posting_of(legs)
        posting, posting_params = posting_sql(changed, rows, after="escrowed")
        columns = ", (SELECT count(*) FROM escrowed), (SELECT count(*) FROM posted)"
        return f"{sql}, {posting}", [*params, *posting_params], columns

    # What `verdict` accepts, as SQL, for a statement that must refuse itself instead.
    accepted = "(SELECT count(*) FROM escrowed) = 1 AND EXISTS (SELECT 1 FROM posted)"

    def verdict(self, row: Any) -> Recorded:
        """The statement's verdict: a refusal raises, and the caller's transaction (the
        task's result with it) rolls back."""
        escrowed, posted = row
        if escrowed != 1:
            raise EscrowStateError(f"Escrow {self.escrow.pk} is no longer funded.")
        if posted == 0:
            raise InvalidAmount("Unknown account in transfer.")
        return Recorded()
