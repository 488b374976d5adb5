"""Idempotency-Key for money-moving requests.

A request with a key first *claims* it: it commits a record of the key and of its own
fingerprint (method, path, parsed body) before doing any work, under a unique constraint.
Then:

- A repeat with the same key and body gets the first response back, marked
  `Idempotent-Replayed: true`; while the first is still being answered, 409
  `idempotency_in_progress` (retry shortly). Concurrent twins therefore do the work once:
  one 201, the others a 409 or the replay.
- The same key with another body is 409 `idempotency_conflict`, whether the first request
  is done or not: a response is only ever replayed for the body it answered.
- Only success (2xx) is remembered. A failure — a domain error (4xx) or a bug (5xx) —
  releases the claim: the service's durable transaction rolled its work back, so a retry
  does the work again, which is what the client wants after, say, topping up for a 402.
- A claim whose request died between claiming and answering (a killed process) lapses
  after `CLAIM_TIMEOUT`; a repeat then takes it over and does the work again. That is
  safe, like a retry after a lost record, because the services deduplicate by the same key
  under a unique constraint (`task_submit`, `deposit_create`, `channel_open`): the
  takeover finds whatever the dead request committed and answers with it. Money never
  moves twice; this layer decides only who answers and with what.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from escrow.errors import IdempotencyConflict, IdempotencyInProgress
from marketplace.exceptions import InvalidIdempotencyKey
from marketplace.models import IdempotencyRecord
from marketplace.task_wait import MAX_SECONDS

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,100}")
REPLAYED_HEADER = "Idempotent-Replayed"
# Far longer than any request takes (one durable transaction, and a submission's wait for
# its task under `Prefer: wait`); a claim this old is a dead one.
CLAIM_TIMEOUT = timedelta(seconds=60 + MAX_SECONDS)


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not KEY_PATTERN.fullmatch(raw):
        raise InvalidIdempotencyKey()
    return raw


def fingerprint(request: Request) -> str:
    """What makes two requests "the same": method, path and the parsed body."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def _claim(user: User, key: str, print_: str) -> IdempotencyRecord | None:
    """Claim the key for this request; None when another request holds it or answered it."""
    for _ in range(3):
        # One INSERT in autocommit; in a caller's transaction, a savepoint keeps a lost race
        # from breaking it.
        guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
        try:
            with guard:
                return IdempotencyRecord.objects.create(user=user, key=key, fingerprint=print_)
        except IntegrityError:
            pass
        holder = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if holder is None:
            continue  # released between our insert and our read
        lapsed = holder.created_at < timezone.now() - CLAIM_TIMEOUT
        if holder.status_code is None and holder.fingerprint == print_ and lapsed:
            # Its request died: take over (a concurrent taker loses the insert above).
            IdempotencyRecord.objects.filter(pk=holder.pk, status_code__isnull=True).delete()
            continue
        return None
    return None


def _answer_repeat(user: User, key: str, print_: str) -> Response:
    record = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if record is not None and record.fingerprint != print_:
        raise IdempotencyConflict()
    if record is None or record.status_code is None:
        raise IdempotencyInProgress()
    return Response(
        record.response_body, status=record.status_code, headers={REPLAYED_HEADER: "true"}
    )


def _release(record: IdempotencyRecord) -> None:
    try:
        IdempotencyRecord.objects.filter(pk=record.pk, status_code__isnull=True).delete()
    except Exception:
        # The claim lapses after CLAIM_TIMEOUT anyway; the original error matters more.
        log.exception("could not release the idempotency claim %s", record.pk)


def idempotent(request: Request, user: User, run: Callable[[str | None], Response]) -> Response:
    """Answer a repeat from the record, or claim the key, `run(key)` and remember a success."""
    key = idempotency_key(request)
    if key is None:
        return run(None)
    print_ = fingerprint(request)
    record = _claim(user, key, print_)
    if record is None:
        return _answer_repeat(user, key, print_)
    try:
        response = run(key)
    except Exception:
        _release(record)
        raise
    if not 200 <= response.status_code < 300:
        _release(record)
        return response
    # Conditional: a claim taken over after lapsing is no longer ours to complete.
    IdempotencyRecord.objects.filter(pk=record.pk, status_code__isnull=True).update(
        status_code=response.status_code, response_body=response.data
    )
    return response
