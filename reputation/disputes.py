"""What a refunded dispute costs the agent (SPEC §14).

A refund — the owner accepts, the deadline passes, or an operator refunds — counts as an
agent-caused failure, scored by the policy in force (−5 under the default one) within the
requester's daily cap, like any outcome a requester caused; a task the requester's own
agent ran is never scored (`self_dealing`). A rejected dispute costs nothing and writes no
event. The event names the dispute (one event per dispute, enforced by the database), not
the task, whose own event is the settlement's; `audit_reputation` replays it in its place.

The caller passes ids only (this app imports no other) and runs it inside the refund's
transaction, after the channel's lock and before escrows and accounts (the lock order).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from reputation.models import ReputationEvent
from reputation.policies import (
    NeutralReason,
    Outcome,
    OutcomeKind,
    quantize,
)
from reputation.services import record_of, reputation_lock, reputation_write_locked

DISPUTE_REFUNDED = "dispute_refunded"


def reputation_apply_dispute(
    *, agent_id: int, dispute_id: int, requester_id: int, owner_id: int
) -> ReputationEvent:
    """Score a refunded dispute as the agent's failure. Exactly once per dispute: a second
    call returns the first event."""
    if requester_id == owner_id:
        outcome = Outcome(
            kind=OutcomeKind.NEUTRAL,
            reason=DISPUTE_REFUNDED,
            neutral_reason=NeutralReason.SELF_DEALING,
        )
    else:
        outcome = Outcome(kind=OutcomeKind.FAILURE, reason=DISPUTE_REFUNDED)
    with transaction.atomic():
        rep = reputation_lock(agent_id=agent_id)
        existing = ReputationEvent.objects.filter(dispute_id=dispute_id).first()
        if existing is not None:
            return existing
        day = timezone.now().astimezone(datetime.UTC).date()
        # Read under the reputation row lock, as settlement does: the day's sum is exact.
        record = record_of(agent_id=agent_id, task_id=None, requester_id=requester_id, day=day)
        cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
        return reputation_write_locked(
            rep,
            record=record,
            outcome=outcome,
            requester_id=requester_id,
            day=day,
            cap=cap,
            allowance=cap - record.moved_today,
            dispute_id=dispute_id,
        )


def dispute_event_of(dispute_id: Any) -> ReputationEvent | None:
    return ReputationEvent.objects.filter(dispute_id=dispute_id).first()
