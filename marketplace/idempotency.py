"""Idempotency-Key for money-moving requests.

A repeat of a request with the same key and the same body gets the first response back
(with `Idempotent-Replayed: true`); the same key with another body is refused with 409
`idempotency_conflict`. Keys are per user.

Exactly-once *effects* come from the services, which deduplicate by key under a unique
constraint, so concurrent repeats cannot both move money. This layer only remembers the
first successful response so that repeats see it, and tells a repeat from a key reused
for a different request. Failed requests are not remembered: retrying after, say, a 402
does the work again, which is what the client wants once the wallet is topped up.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from escrow.errors import IdempotencyConflict
from marketplace.exceptions import InvalidIdempotencyKey
from marketplace.models import IdempotencyRecord

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,100}")
REPLAYED_HEADER = "Idempotent-Replayed"


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


def _stored_response(record: IdempotencyRecord, print_: str) -> Response:
    """The first response given for the key, marked replayed, when the request is the same.

    A different request (another fingerprint) reusing the key is a client error: 409.
    """
    if record.fingerprint != print_:
        raise IdempotencyConflict()
    return Response(
        record.response_body, status=record.status_code, headers={REPLAYED_HEADER: "true"}
    )


def idempotent(request: Request, user: User, run: Callable[[str | None], Response]) -> Response:
    """Answer a repeat from the record, or `run(key)` and remember its successful response."""
    key = idempotency_key(request)
    if key is None:
        return run(None)
    print_ = fingerprint(request)
    record = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if record is not None:
        return _stored_response(record, print_)
    response = run(key)
    if not 200 <= response.status_code < 300:
        return response
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(
                user=user,
                key=key,
                fingerprint=print_,
                status_code=response.status_code,
                response_body=response.data,
            )
    except IntegrityError:
        # A concurrent repeat stored its response first; answer as it did.
        return _stored_response(IdempotencyRecord.objects.get(user=user, key=key), print_)
    return response
