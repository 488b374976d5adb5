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

from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import (
    NeutralReason,
    Outcome,
    OutcomeKind,
    current_policy_path,
    policy_for,
    quantize,
    score_outcome,
)
from reputation.services import COUNTERS, EVIDENCE, record_of, reputation_open, standing_of

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
        rep = (
            AgentReputation.objects.select_for_update(no_key=True).filter(agent_id=agent_id).first()
        )
        if rep is None:  # agents get their row when created; this is for older data
            reputation_open(agent_id=agent_id)
            rep = AgentReputation.objects.select_for_update(no_key=True).get(agent_id=agent_id)
        existing = ReputationEvent.objects.filter(dispute_id=dispute_id).first()
        if existing is not None:
            return existing
        day = timezone.now().astimezone(datetime.UTC).date()
        # Read under the reputation row lock, as settlement does: the day's sum is exact.
        record = record_of(agent_id=agent_id, task_id=None, requester_id=requester_id, day=day)
        cap = quantize(Decimal(settings.REPUTATION_DAILY_CAP_PER_REQUESTER))
        path = current_policy_path()
        before = rep.score
        scored = score_outcome(
            policy_for(path), standing_of(rep), outcome, cap - record.moved_today
        )
        changed = ["score", COUNTERS[scored.kind], "updated_at"]
        setattr(rep, COUNTERS[scored.kind], getattr(rep, COUNTERS[scored.kind]) + 1)
        if scored.kind in EVIDENCE:
            evidence = EVIDENCE[scored.kind]
            setattr(rep, evidence, getattr(rep, evidence) + scored.weight)
            changed.append(evidence)
            if not record.requester_known:
                rep.requesters += 1
                changed.append("requesters")
        rep.score = scored.score
        rep.save(update_fields=changed)
        return ReputationEvent.objects.create(
            agent_id=agent_id,
            dispute_id=dispute_id,
            requester_id=requester_id,
            outcome=scored.kind,
            reason=outcome.reason,
            neutral_reason=scored.neutral_reason,
            policy=path,
            settled_on=day,
            daily_cap=cap,
            weight=scored.weight,
            delta=scored.score - before,
            score_before=before,
            score_after=scored.score,
        )


def dispute_event_of(dispute_id: Any) -> ReputationEvent | None:
    return ReputationEvent.objects.filter(dispute_id=dispute_id).first()
