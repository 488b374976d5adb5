"""Payment channels: one deposit, many tasks, paid by signed cumulative vouchers.

Per task, the requester sends a voucher signed with their Ed25519 key over exactly
`agent-exchange/voucher/v1\\n{channel_id}\\n{nonce}\\n{cumulative_amount}`. Accepting it
reserves the task's budget; settling the task redeems only its cost — all on the one
channel row, with no ledger transfer. Closing moves the money once.

The signature is checked before any row is locked (`voucher_verify`), so a flood of forged
vouchers costs reads and signature checks but never holds a channel. Channel rows are
locked FOR NO KEY UPDATE: escrows reference channels, and inserting a referencing row takes
KEY SHARE, which a plain FOR UPDATE would deadlock against.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from escrow.earning_models import Dispute
from escrow.errors import (
    ChannelAgentMismatch,
    ChannelExpired,
    ChannelNotFound,
    ChannelNotOpen,
    IdempotencyConflict,
    InvalidAmount,
    VoucherBadSignature,
    VoucherExceedsDeposit,
    VoucherInsufficient,
    VoucherMalformed,
    VoucherReplayed,
    VoucherStale,
)
from escrow.holds import Share, earnings_hold, holding
from escrow.keys import custodial_key, custodial_private_key, voucher_signer
from escrow.keys import key_register as key_register  # re-exported: callers know it here
from escrow.ledger import Leg, ledger_post, validate_amount, wallet_id
from escrow.models import Account, Escrow, PaymentChannel, Transfer, Voucher
from escrow.system_accounts import shard_for, system_account_id

VOUCHER_DOMAIN = "agent-exchange/voucher/v1"
Status, Kind = PaymentChannel.Status, Transfer.Kind


@dataclass(frozen=True)
class SignedVoucher:
    nonce: int
    cumulative_amount: int
    signature: str

    @classmethod
    def parse(cls, data: Any) -> SignedVoucher:
        if not isinstance(data, dict):
            raise VoucherMalformed()
        nonce, amount, signature = (
            data.get("nonce"),
            data.get("cumulative_amount"),
            data.get("signature"),
        )
        if not _is_int(nonce) or not _is_int(amount):
            raise VoucherMalformed("nonce and cumulative_amount must be integers.")
        assert isinstance(nonce, int) and isinstance(amount, int)
        if nonce <= 0 or amount < 0 or nonce >= 2**63 or amount >= 2**63:
            raise VoucherMalformed("nonce must be positive and cumulative_amount non-negative.")
        if not isinstance(signature, str):
            raise VoucherMalformed("signature must be a base64 string.")
        return cls(nonce=nonce, cumulative_amount=amount, signature=signature)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "cumulative_amount": self.cumulative_amount,
            "signature": self.signature,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def voucher_message(channel_id: Any, nonce: int, cumulative_amount: int) -> bytes:
    return f"{VOUCHER_DOMAIN}\n{channel_id}\n{nonce}\n{cumulative_amount}".encode()


# --- vouchers ----------------------------------------------------------------------------


def voucher_sign_custodial(*, user_id: int, channel_id: Any, budget: int) -> SignedVoucher:
    """The next voucher for a browser task: it covers what the channel needs plus `budget`."""
    private = custodial_private_key(custodial_key(user_id=user_id))
    channel = PaymentChannel.objects.get(pk=channel_id, requester_id=user_id)
    nonce = channel.nonce + 1
    amount = min(channel.deposit, channel.redeemed + channel.drawn + channel.reserved + budget)
    signature = private.sign(voucher_message(channel.pk, nonce, amount))
    return SignedVoucher(nonce, amount, base64.b64encode(signature).decode())


@dataclass(frozen=True)
class VerifiedVoucher:
    """A voucher whose signature verified, by one of the requester's live keys, for this
    channel. Its nonce and amount are still to be checked against the channel."""

    channel_id: Any
    voucher: SignedVoucher


def voucher_verify(*, channel_id: Any, requester_user_id: int, voucher: Any) -> VerifiedVoucher:
    """Parse the voucher and check its signature, reading without a lock.

    Call it before locking or writing anything: a forged voucher is then refused after a
    few reads and at most `MAX_REQUESTER_KEYS` + 1 signature checks, with no lock held.
    The channel's requester never changes, so what is checked here stays true;
    `channel_reserve` checks the rest in its conditional UPDATE.
    """
    parsed = SignedVoucher.parse(voucher)
    try:
        found = (
            PaymentChannel.objects.filter(pk=channel_id, requester_id=requester_user_id)
            .values_list("pk", flat=True)
            .first()
        )
    except (ValidationError, ValueError):
        found = None
    if found is None:
        raise ChannelNotFound()
    message = voucher_message(found, parsed.nonce, parsed.cumulative_amount)
    signer = voucher_signer(user_id=requester_user_id, message=message, signature=parsed.signature)
    if signer is None:
        raise VoucherBadSignature()
    return VerifiedVoucher(channel_id=found, voucher=parsed)


# --- lifecycle -----------------------------------------------------------------------------


def _locked(channel_id: Any) -> PaymentChannel:
    channel = PaymentChannel.objects.select_for_update(no_key=True).filter(pk=channel_id).first()
    if channel is None:
        raise ChannelNotFound()
    return channel


def channel_open(
    *,
    requester_user_id: int,
    agent_id: int,
    payee_user_id: int,
    deposit: int,
    idempotency_key: str | None = None,
) -> PaymentChannel:
    """Move `deposit` from the requester's wallet into the channels account."""
    validate_amount(deposit)
    now = timezone.now()
    channel_pk = uuid.uuid4()
    with transaction.atomic():
        if idempotency_key is not None:
            existing = PaymentChannel.objects.filter(
                requester_id=requester_user_id, idempotency_key=idempotency_key
            ).first()
            if existing is not None:
                return _same_opening(existing, agent_id=agent_id, deposit=deposit)
        try:
            with transaction.atomic():
                channel = PaymentChannel.objects.create(
                    requester_id=requester_user_id,
                    agent_id=agent_id,
                    payer_id=wallet_id(user_id=requester_user_id),
                    payee_id=wallet_id(user_id=payee_user_id),
                    deposit=deposit,
                    idempotency_key=idempotency_key,
                    expires_at=now + timedelta(seconds=settings.CHANNEL_TTL_SECONDS),
                    shard=shard_for(channel_pk),
                    pk=channel_pk,
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = PaymentChannel.objects.get(
                requester_id=requester_user_id, idempotency_key=idempotency_key
            )
            return _same_opening(existing, agent_id=agent_id, deposit=deposit)
        ledger_post(
            [
                Leg(
                    channel.payer_id,
                    system_account_id(Account.Kind.CHANNELS, channel.shard),
                    deposit,
                    Transfer.Kind.CHANNEL_DEPOSIT,
                    channel_id=channel.pk,
                )
            ]
        )
        return channel


def _same_opening(existing: PaymentChannel, *, agent_id: int, deposit: int) -> PaymentChannel:
    if (existing.agent_id, existing.deposit) != (agent_id, deposit):
        raise IdempotencyConflict()
    return existing


def channel_reserve(
    *,
    channel_id: Any,
    requester_user_id: int,
    agent_id: int,
    voucher: Any,
    budget: int,
    task_id: Any,
) -> PaymentChannel:
    """Accept the task's voucher and hold its budget. Runs inside the submission.

    `voucher` is best verified already (`voucher_verify`, before the submission locks
    anything); a raw one is verified here, still before the channel is locked.
    """
    if not isinstance(voucher, VerifiedVoucher):
        voucher = voucher_verify(
            channel_id=channel_id, requester_user_id=requester_user_id, voucher=voucher
        )
    if voucher.channel_id != uuid.UUID(str(channel_id)):
        raise ValueError("the voucher was verified for another channel")
    parsed = voucher.voucher
    with transaction.atomic(savepoint=False):
        # One conditional UPDATE that returns the row: every check below is in its WHERE
        # (and the constraints guard the amounts); only a refusal reads the row to say why.
        channel = _reserve(voucher.channel_id, requester_user_id, agent_id, parsed, budget)
        if channel is None:
            channel = _locked(voucher.channel_id)
            _reserve_check(channel, requester_user_id, agent_id, parsed, budget)
            # It changed between the two statements; under the lock it cannot.
            channel = _reserve(voucher.channel_id, requester_user_id, agent_id, parsed, budget)
            assert channel is not None
        Voucher.objects.create(
            channel_id=channel.pk,
            nonce=parsed.nonce,
            cumulative_amount=parsed.cumulative_amount,
            signature=parsed.signature,
            task_id=task_id,
        )
        return channel


def _reserve(
    channel_id: Any, requester_user_id: int, agent_id: int, parsed: SignedVoucher, budget: int
) -> PaymentChannel | None:
    table = PaymentChannel._meta.db_table
    pk = PaymentChannel._meta.pk.get_db_prep_value(uuid.UUID(str(channel_id)), connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    amount = parsed.cumulative_amount
    rows = list(
        PaymentChannel.objects.raw(
            f"UPDATE {table} SET nonce = %s, authorized = %s, "  # noqa: S608
            "reserved = reserved + %s, in_flight = in_flight + 1 "
            "WHERE id = %s AND requester_id = %s AND agent_id = %s AND status = %s "
            "AND expires_at > %s AND nonce < %s AND deposit >= %s "
            "AND redeemed + drawn + reserved + %s <= %s RETURNING *",
            [
                *(parsed.nonce, amount, budget, pk, requester_user_id, agent_id, Status.OPEN),
                *(now, parsed.nonce, amount, budget, amount),
            ],
        )
    )
    return rows[0] if rows else None


def _reserve_check(
    channel: PaymentChannel,
    requester_user_id: int,
    agent_id: int,
    parsed: SignedVoucher,
    budget: int,
) -> None:
    """Why the voucher cannot be accepted: raises the first reason. The row is locked."""
    if channel.requester_id != requester_user_id:
        raise ChannelNotFound()
    if channel.status != Status.OPEN:
        raise ChannelNotOpen()
    if channel.expires_at <= timezone.now():
        raise ChannelExpired()
    if channel.agent_id != agent_id:
        raise ChannelAgentMismatch()
    if parsed.nonce == channel.nonce:
        raise VoucherReplayed()
    if parsed.nonce < channel.nonce:
        raise VoucherStale(f"The channel's latest nonce is {channel.nonce}.")
    if parsed.cumulative_amount > channel.deposit:
        raise VoucherExceedsDeposit(f"The deposit is {channel.deposit} µCR.")
    needed = channel.redeemed + channel.drawn + channel.reserved + budget
    if parsed.cumulative_amount < needed:
        raise VoucherInsufficient(
            f"The voucher must authorize at least {needed} µCR (redeemed {channel.redeemed} "
            f"+ drawn {channel.drawn} + in flight {channel.reserved} + budget {budget})."
        )


def channel_finish_task(*, channel_id: Any, budget: int, cost: int, fee: int) -> PaymentChannel:
    """A channel task ended: redeem its cost (0 on failure) and release its hold.

    One row changes; a closing channel with nothing left in flight becomes due — the
    caller settles it with `channel_settle_if_due` after writing the task's escrow row,
    keeping the lock order (channels, escrows, accounts).
    """
    validate_amount(cost, allow_zero=True)
    validate_amount(fee, allow_zero=True)
    if cost > budget or fee > cost:
        raise InvalidAmount(f"cost {cost} and fee {fee} do not fit the budget {budget}.")
    # One conditional UPDATE that returns the row: no lock taken before it, no read after.
    table = PaymentChannel._meta.db_table
    closes_at = connection.ops.adapt_datetimefield_value(
        timezone.now() + timedelta(seconds=settings.CHANNEL_CHALLENGE_SECONDS)
    )
    pk = PaymentChannel._meta.pk.get_db_prep_value(uuid.UUID(str(channel_id)), connection)
    rows = list(
        PaymentChannel.objects.raw(
            f"UPDATE {table} SET redeemed = redeemed + %s, fees = fees + %s, "  # noqa: S608
            "reserved = reserved - %s, in_flight = in_flight - 1, "
            "closes_at = CASE WHEN status = %s AND in_flight = 1 THEN %s ELSE closes_at END "
            "WHERE id = %s AND in_flight > 0 AND reserved >= %s RETURNING *",
            [cost, fee, budget, Status.CLOSING, closes_at, pk, budget],
        )
    )
    if not rows:
        if not PaymentChannel.objects.filter(pk=channel_id).exists():
            raise ChannelNotFound()
        raise ChannelNotOpen("The channel has no such task in flight.")
    return rows[0]


def channel_settle_if_due(*, channel_id: Any) -> bool:
    with transaction.atomic():
        channel = _locked(channel_id)
        if not channel_is_due(channel):
            return False
        _settle(channel)
        return True


def channel_close(*, channel_id: Any, by_user_id: int) -> PaymentChannel:
    """open → closing, by the requester or the agent's owner. Settles when due."""
    with transaction.atomic():
        channel = _locked(channel_id)
        payee_user = Account.objects.values_list("user_id", flat=True).get(pk=channel.payee_id)
        if by_user_id not in (channel.requester_id, payee_user):
            raise ChannelNotFound()
        _start_closing(channel)
        return channel


def _start_closing(channel: PaymentChannel) -> None:
    if channel.status != Status.OPEN:
        raise ChannelNotOpen(f"The channel is already {channel.status}.")
    channel.status = Status.CLOSING
    if channel.in_flight == 0:
        channel.closes_at = timezone.now() + timedelta(seconds=settings.CHANNEL_CHALLENGE_SECONDS)
    channel.save(update_fields=["status", "closes_at"])
    if channel_is_due(channel):
        _settle(channel)


def channel_is_due(channel: PaymentChannel) -> bool:
    return (
        channel.status == Status.CLOSING
        and channel.in_flight == 0
        and channel.closes_at is not None
        and channel.closes_at <= timezone.now()
    )


def _settle(channel: PaymentChannel) -> None:
    """closing → settled, moving the money once. The channel row must be locked."""
    channels = system_account_id(Account.Kind.CHANNELS, channel.shard)
    payee = channel.payee_id
    shares = (
        [
            Share(task_id, (cost or 0) - (fee or 0), fee or 0)
            for task_id, cost, fee in Escrow.objects.filter(
                channel=channel, status=Escrow.Status.COMPLETED, cost__gt=0
            ).values_list("task_id", "cost", "fee")
        ]
        if channel.redeemed
        else []
    )
    # With nothing held, a dispute opened while the channel was open (and the hold on) still
    # claims its task's share: then the shares are held after all (that one frozen, the
    # others released by the next sweep), never paid out from under the dispute.
    disputed = (
        not holding()
        and Dispute.objects.filter(
            task_id__in=[share.task_id for share in shares], status__in=Dispute.PENDING
        ).exists()
    )
    if shares and (holding() or disputed):  # the owner's share waits, one earning per task
        earnings_hold(wallet_id=payee, shares=shares, channel_id=channel.pk)
        payee = system_account_id(Account.Kind.EARNINGS, channel.shard)
    fees = system_account_id(Account.Kind.PLATFORM_FEES, channel.shard)
    payouts = [
        (payee, channel.redeemed - channel.fees, Kind.CHANNEL_PAYOUT),
        (fees, channel.fees, Kind.CHANNEL_FEE),
        (channel.payer_id, channel.deposit - channel.redeemed - channel.drawn, Kind.CHANNEL_REFUND),
    ]
    ledger_post(
        [Leg(channels, to, amount, kind, channel_id=channel.pk) for to, amount, kind in payouts]
    )
    channel.status = Status.SETTLED
    channel.settled_at = timezone.now()
    channel.save(update_fields=["status", "settled_at"])


def channels_settle_due() -> dict[str, int]:
    """Scheduled: start closing expired channels, settle the ones that are due."""
    now = timezone.now()
    counts = {"expired": 0, "settled": 0}
    for channel_id in PaymentChannel.objects.filter(
        status=Status.OPEN, expires_at__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic(durable=True):
            channel = _locked(channel_id)
            if channel.status == Status.OPEN and channel.expires_at <= now:
                _start_closing(channel)
                counts["expired"] += 1
                counts["settled"] += channel.status == Status.SETTLED
    for channel_id in PaymentChannel.objects.filter(
        status=Status.CLOSING, in_flight=0, closes_at__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic(durable=True):
            channel = _locked(channel_id)
            if channel_is_due(channel):
                _settle(channel)
                counts["settled"] += 1
    return counts
