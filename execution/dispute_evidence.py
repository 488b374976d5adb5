"""Evidence for a dispute: the platform replays the task's receipt (SPEC §14).

Opening a dispute enqueues `dispute_replay(id)` once its transaction commits. The worker
reruns the receipt's pinned binary on the task's input with the receipt's fuel limit
(`receipt_replay`, outside any transaction: it runs WASM) and records the verdict on the
dispute with a conditional UPDATE from `pending`, so a duplicate message changes nothing:

- `matched`: the rerun printed the receipt's output, byte for byte;
- `mismatched`: it printed something else, or the task's input or binary no longer match;
- `unavailable`: there was nothing to replay, or the replay could not run.

A worker that dies mid-replay leaves it `pending`; the scheduled `dispute_replays_recover`
enqueues it again once its last request is older than `DISPUTE_REPLAY_RETRY_SECONDS`, up to
`DISPUTE_REPLAY_MAX_ATTEMPTS` times, after which it is `unavailable`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from escrow.earning_models import Dispute
from execution.services import NOTHING_TO_REPLAY, receipt_replay
from marketplace.disputes import dispute_replay_enqueue

log = logging.getLogger(__name__)

Replay = Dispute.Replay
_HASH = re.compile(r"output hash ([0-9a-f]{64})")


def _verdict(matched: bool, detail: str) -> tuple[str, str]:
    """(status, output hash) from receipt_replay's answer."""
    found = _HASH.match(detail)
    if matched:
        return Replay.MATCHED, found.group(1) if found else ""
    if detail == "no such task on this platform" or detail.startswith(NOTHING_TO_REPLAY):
        return Replay.UNAVAILABLE, ""
    return Replay.MISMATCHED, found.group(1) if found else ""


def _record(dispute_id: int, status: str, *, output_sha256: str = "", detail: str = "") -> bool:
    won = Dispute.objects.filter(pk=dispute_id, replay_status=Replay.PENDING).update(
        replay_status=status,
        replayed_at=timezone.now(),
        replay_output_sha256=output_sha256,
        replay_detail=detail[:300],
    )
    return won == 1


def dispute_replay(dispute_id: int) -> str:
    """The worker's entry point: replay the dispute's receipt and record the verdict."""
    attempts = settings.DISPUTE_REPLAY_MAX_ATTEMPTS
    won = Dispute.objects.filter(
        pk=dispute_id, replay_status=Replay.PENDING, replay_attempts__lt=attempts
    ).update(replay_attempts=F("replay_attempts") + 1)
    if not won:
        gave_up = f"no replay finished in {attempts} tries"
        if _record(dispute_id, Replay.UNAVAILABLE, detail=gave_up):
            return Replay.UNAVAILABLE
        return "skipped"  # replayed already (a duplicate message), or no such dispute
    evidence = Dispute.objects.values_list("evidence", flat=True).get(pk=dispute_id) or {}
    receipt = evidence.get("receipt") or {}
    try:
        payload: dict[str, Any] = json.loads(receipt["payload"])
    except (KeyError, TypeError, ValueError):
        _record(dispute_id, Replay.UNAVAILABLE, detail="the task has no receipt to replay")
        return Replay.UNAVAILABLE
    try:
        matched, detail = receipt_replay(payload)
    except Exception as exc:  # the binary is gone, the engine refused it, …: recorded
        log.exception("dispute %s: the replay could not run", dispute_id)
        _record(dispute_id, Replay.UNAVAILABLE, detail=f"the replay could not run: {exc}")
        return Replay.UNAVAILABLE
    status, output_sha256 = _verdict(matched, detail)
    _record(dispute_id, status, output_sha256=output_sha256, detail=detail)
    return status


def dispute_replays_recover(*, now: Any = None) -> int:
    """Scheduled: enqueue again the replays a lost worker or a lost message left pending."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.DISPUTE_REPLAY_RETRY_SECONDS)
    due = Dispute.objects.filter(
        Q(replay_enqueued_at__lt=stale) | Q(replay_enqueued_at__isnull=True),
        replay_status=Replay.PENDING,
    )
    resent = 0
    for dispute_id, enqueued_at in due.values_list("pk", "replay_enqueued_at")[:1000]:
        with transaction.atomic(durable=True):
            won = Dispute.objects.filter(
                pk=dispute_id, replay_status=Replay.PENDING, replay_enqueued_at=enqueued_at
            ).update(replay_enqueued_at=now)
            if won:
                transaction.on_commit(partial(dispute_replay_enqueue, dispute_id))
        resent += won
    return resent
