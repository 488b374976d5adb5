"""What API keys spend: counting submissions and channels, giving back at settlement.

A submission made with a key counts its whole budget against each of the key's
limits — the UTC day, the UTC calendar month and the key's lifetime — and a per-task limit
caps any one budget. The count happens in the submission's own transaction, with the key's
row locked (`select_for_update(no_key=True)`), so concurrent submissions are serialized on
it and never overshoot a limit. When the task settles, or is cancelled, what came back to
the wallet (`budget − cost`) is given back to the key, in that transaction too.

Lock order: a key's row comes after task rows and before channels, reputation, escrows
and accounts. A submission locks no existing task, so it takes the key first; settlement
and cancellation hold their task (the compare-and-set), then give back to the key, then
touch the channel and the money.

Windows. A counter remembers the window it counts (`spent_daily_on`, `spent_monthly_on`);
the first charge in a new window starts it at zero. A give-back lowers the day and month
counters only while they still count the window the amount was charged in: money charged
yesterday and refunded today frees yesterday's budget, which is gone, not today's. It
always lowers the lifetime total.

Channels. Opening a channel with a key counts its deposit. The channel's own tasks are
then not counted again (their budget is part of that deposit), but still obey the per-task
limit; a task paid from a channel the key did not open counts like an escrow task. Once the
channel has settled, what came back to the wallet (`deposit − redeemed`, less what its
evaluators' runs cost) is given back to the key — the next time the key counts a
submission, or its spending is read — because channels settle in the ledger app, which
knows nothing of keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from escrow.channel_evaluation import channel_returned
from escrow.channels import channel_open
from escrow.models import PaymentChannel
from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys.lifecycle import KeyRefused, api_key_check_agent
from marketplace.errors import SpendLimitExceeded
from marketplace.models import Task

# --- windows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """The UTC day and calendar month a moment falls in (a month is named by its 1st)."""

    day: date
    month: date

    @classmethod
    def at(cls, moment: datetime) -> Windows:
        day = moment.astimezone(UTC).date()
        return cls(day=day, month=day.replace(day=1))

    @property
    def day_ends(self) -> datetime:
        return datetime.combine(self.day + timedelta(days=1), datetime.min.time(), UTC)

    @property
    def month_ends(self) -> datetime:
        nxt = (self.month + timedelta(days=32)).replace(day=1)
        return datetime.combine(nxt, datetime.min.time(), UTC)


@dataclass(frozen=True)
class Spending:
    """What a key has spent in its current windows, and what its limits leave."""

    daily: int
    monthly: int
    total: int
    limits: dict[str, int | None]
    windows: Windows

    def remaining(self) -> dict[str, int | None]:
        left: dict[str, int | None] = {}
        for name, spent in (
            ("daily", self.daily),
            ("monthly", self.monthly),
            ("total", self.total),
        ):
            limit = self.limits[name]
            left[name] = None if limit is None else max(0, limit - spent)
        return left


def api_key_spending(key: ApiKey, *, now: datetime | None = None) -> Spending:
    """The key's counters as of `now`: a window that has passed counts zero."""
    windows = Windows.at(now or timezone.now())
    return Spending(
        daily=key.spent_daily if key.spent_daily_on == windows.day else 0,
        monthly=key.spent_monthly if key.spent_monthly_on == windows.month else 0,
        total=key.spent_total,
        limits=key.limits(),
        windows=windows,
    )


# --- counting and giving back -----------------------------------------------------------------


def _locked(key_id: int, *, agent_id: int | None = None) -> ApiKey:
    """The key's row, locked for the rest of the transaction, after giving back what the
    key's settled channels returned; with `agent_id`, checked to be allowed that agent.

    One statement when there is nothing to give back and the agent is allowed: what the
    checks need is read by the locking SELECT itself.
    """
    through = ApiKey.agents.through.objects.filter(apikey_id=OuterRef("pk"))
    settled = ApiKeyCharge.objects.filter(
        key_id=OuterRef("pk"),
        settled_at__isnull=True,
        channel__status=PaymentChannel.Status.SETTLED,
    )
    key = (
        ApiKey.objects.select_for_update(no_key=True, of=("self",))
        .annotate(
            gives_back=Exists(settled),
            restricted=Exists(through),
            allowed=Exists(through.filter(agent_id=agent_id or 0)),
        )
        .get(pk=key_id)
    )
    if agent_id is not None and key.restricted and not key.allowed:  # type: ignore[attr-defined]
        api_key_check_agent(key, agent_id)  # raises, naming the agents it may use
    if key.gives_back and _give_back_settled_channels(key.pk):  # type: ignore[attr-defined]
        key.refresh_from_db()
    now = timezone.now()
    # Revocation takes effect at once, even for a request that authenticated just before.
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise KeyRefused("This API key has been revoked or has expired.")
    return key


def _count(key: ApiKey, amount: int, *, counted: bool, per_task: bool) -> Windows:
    """Check `amount` against the locked key's limits and, if `counted`, add it to them."""
    spending = api_key_spending(key)
    windows = spending.windows
    limits = spending.limits
    if per_task and limits["per_task"] is not None and amount > limits["per_task"]:
        raise SpendLimitExceeded(
            f"The budget ({amount} µCR) is above this key's per-task limit "
            f"({limits['per_task']} µCR).",
            fields={
                "limit": "per_task",
                "remaining": limits["per_task"],
                "requested": amount,
                "resets_at": None,
            },
        )
    if not counted:
        return windows
    # The longest-lasting limit first: that is the one waiting would not cure.
    for name, used, resets in (
        ("total", spending.total, None),
        ("monthly", spending.monthly, windows.month_ends),
        ("daily", spending.daily, windows.day_ends),
    ):
        limit = limits[name]
        if limit is not None and used + amount > limit:
            left = max(0, limit - used)
            raise SpendLimitExceeded(
                f"This would spend {amount} µCR; the key's {name} limit leaves {left} µCR.",
                fields={
                    "limit": name,
                    "remaining": left,
                    "requested": amount,
                    "resets_at": resets.isoformat() if resets else None,
                },
            )
    ApiKey.objects.filter(pk=key.pk).update(
        spent_total=spending.total + amount,
        spent_daily=spending.daily + amount,
        spent_daily_on=windows.day,
        spent_monthly=spending.monthly + amount,
        spent_monthly_on=windows.month,
    )
    return windows


def api_key_charge_task(*, key: ApiKey, task: Task, channel: Any = None) -> None:
    """Count a new task's budget against its key. Runs inside the submission's transaction,
    after the task row is written and before its channel or escrow is touched."""
    locked = _locked(key.pk, agent_id=task.agent_id)
    # A channel this key opened counted its whole deposit already.
    counted = not (
        task.payment == Task.Payment.CHANNEL
        and ApiKeyCharge.objects.filter(key=locked, channel_id=_uuid_or_none(channel)).exists()
    )
    windows = _count(locked, task.budget, counted=counted, per_task=True)
    if counted:
        ApiKeyCharge.objects.create(
            key=locked, task=task, amount=task.budget, day=windows.day, month=windows.month
        )


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None  # not a channel id at all: the channel's own check refuses it


@transaction.atomic(durable=True)
def api_key_channel_open(
    *,
    key: ApiKey,
    requester_user_id: int,
    agent_id: int,
    payee_user_id: int,
    deposit: int,
    idempotency_key: str | None = None,
) -> PaymentChannel:
    """Open a channel paid for with a key: its deposit counts against the key's limits."""
    locked = _locked(key.pk)
    if idempotency_key is not None:
        existing = PaymentChannel.objects.filter(
            requester_id=requester_user_id, idempotency_key=idempotency_key
        ).exists()
        if existing:  # a repeat: the ledger's own check answers it, nothing is counted again
            return channel_open(
                requester_user_id=requester_user_id,
                agent_id=agent_id,
                payee_user_id=payee_user_id,
                deposit=deposit,
                idempotency_key=idempotency_key,
            )
    api_key_check_agent(locked, agent_id)
    windows = _count(locked, deposit, counted=True, per_task=False)
    channel = channel_open(
        requester_user_id=requester_user_id,
        agent_id=agent_id,
        payee_user_id=payee_user_id,
        deposit=deposit,
        idempotency_key=idempotency_key,
    )
    ApiKeyCharge.objects.create(
        key=locked, channel=channel, amount=deposit, day=windows.day, month=windows.month
    )
    return channel


def _give_back(charge: ApiKeyCharge, amount: int) -> bool:
    """Close the charge, returning `amount` of it to its key's counters. Once per charge."""
    amount = max(0, min(amount, charge.amount))
    won = ApiKeyCharge.objects.filter(pk=charge.pk, settled_at__isnull=True).update(
        settled_at=timezone.now(), given_back=amount
    )
    if not won or not amount:
        return bool(won)
    back = Value(amount, output_field=BigIntegerField())
    # A window that has moved on since the charge is not touched (see the module's note).
    ApiKey.objects.filter(pk=charge.key_id).update(
        spent_total=F("spent_total") - back,
        spent_daily=Case(
            When(spent_daily_on=charge.day, then=F("spent_daily") - back),
            default=F("spent_daily"),
            output_field=BigIntegerField(),
        ),
        spent_monthly=Case(
            When(spent_monthly_on=charge.month, then=F("spent_monthly") - back),
            default=F("spent_monthly"),
            output_field=BigIntegerField(),
        ),
    )
    return True


def api_key_give_back(*, task_id: Any, amount: int) -> None:
    """A key's task finished: give back what it did not spend. Runs inside the settlement
    (or cancellation), after the task's compare-and-set and before channels and money.

    On PostgreSQL one statement closes the charge and gives back to its key, in the order
    `_give_back` takes them (the charge's row, then the key's)."""
    if connection.vendor == "postgresql":
        charges, keys = ApiKeyCharge._meta.db_table, ApiKey._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                WITH charge AS (
                    UPDATE {charges} SET settled_at = %s,
                        given_back = LEAST(amount, GREATEST(0, %s::bigint))
                    WHERE task_id = %s AND settled_at IS NULL
                    RETURNING key_id, given_back, day, month
                )
                UPDATE {keys} AS k SET spent_total = k.spent_total - c.given_back,
                    spent_daily = CASE WHEN k.spent_daily_on = c.day
                        THEN k.spent_daily - c.given_back ELSE k.spent_daily END,
                    spent_monthly = CASE WHEN k.spent_monthly_on = c.month
                        THEN k.spent_monthly - c.given_back ELSE k.spent_monthly END
                FROM charge AS c WHERE k.id = c.key_id AND c.given_back > 0
                """,  # noqa: S608
                [timezone.now(), amount, task_id],
            )
        return
    charge = ApiKeyCharge.objects.filter(task_id=task_id, settled_at__isnull=True).first()
    if charge is not None:
        _give_back(charge, amount)


def _give_back_settled_channels(key_id: int) -> int:
    """Give back what the key's settled channels returned to the wallet. Key row locked."""
    pending = ApiKeyCharge.objects.filter(
        key_id=key_id,
        settled_at__isnull=True,
        channel__status=PaymentChannel.Status.SETTLED,
    ).select_related("channel")
    done = 0
    for charge in pending:
        assert charge.channel is not None
        done += _give_back(charge, channel_returned(charge.channel))
    return done


def api_keys_settle_channels(*, user: User) -> None:
    """Before showing a user's keys: give back what their settled channels returned."""
    key_ids = set(
        ApiKeyCharge.objects.filter(
            key__user=user,
            settled_at__isnull=True,
            channel__status=PaymentChannel.Status.SETTLED,
        ).values_list("key_id", flat=True)
    )
    for key_id in sorted(key_ids):
        with transaction.atomic(durable=True):
            ApiKey.objects.select_for_update(no_key=True).get(pk=key_id)
            _give_back_settled_channels(key_id)
