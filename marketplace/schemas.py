"""The one check of an agent's or a task's `output_schema`, and of a version's
`input_schema` and `output_schema` (marketplace.contracts): a JSON Schema, or nothing.

Both the API's input validation and the services apply it, so a schema the API accepts
is one the services accept, and the other way round. A schema is accepted exactly when
the validator the executor checks outputs with compiles it (`execution.engine.outputs`:
jsonschema-rs, linear-time patterns, no remote `$ref`), so no task fails at run time
over a schema it was allowed to submit.

Compiling can be made slow on purpose (thousands of bounded repetitions), and each process
has one checker, which checks one schema at a time. So that one user's slow schemas can't
make anybody else's submission fail (SPEC §23):
- a schema gets OUTPUT_SCHEMA_COMPILE_SECONDS of the checker's own time; waiting while the
  checker works for others is not counted against it (only bounded, apart);
- each user has SCHEMA_CHECK_SECONDS_PER_MINUTE of checker time, counted in the shared cache;
  past it, a schema the checker has not seen is refused at once (429 `schema_check_budget`);
- a schema that was refused is refused again from the shared cache, without compiling, for
  SCHEMA_REFUSAL_CACHE_SECONDS; one that compiled is remembered by this process.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.core.cache import cache

from escrow.errors import DomainError
from execution.engine import outputs
from marketplace.errors import InvalidOutputSchema, SchemaTooLarge

# SPEC §13: larger schemas are refused at submission (serialized as compact JSON).
OUTPUT_SCHEMA_MAX_BYTES = 64 * 1024
# Compiling is bounded too: a schema whose patterns take longer than this to compile
# (or more than the checker's memory) is refused rather than left for a worker.
OUTPUT_SCHEMA_COMPILE_SECONDS = 2.0
# How long a check waits for the checker while it works for others, at most.
CHECKER_WAIT_SECONDS = 15.0
# Schemas this process saw compile, by their hash: accepted again without the checker.
ACCEPTED_REMEMBERED = 1024
_accepted: OrderedDict[str, None] = OrderedDict()


class SchemaCheckBudgetSpent(DomainError):
    code = "schema_check_budget"
    status = 429
    retry_after = 60
    default_message = "You have used your share of schema checking for now."


class SchemaCheckerBusy(DomainError):
    code = "schema_checker_busy"
    status = 503
    retry_after = 5
    default_message = "The schema checker is busy; try again in a few seconds."


def output_schema_check(
    schema: Any,
    *,
    user_id: int | None = None,
    field: str = "output_schema",
    invalid: type[DomainError] = InvalidOutputSchema,
) -> None:
    """Raise `InvalidOutputSchema` unless `schema` is None or a JSON Schema object that
    the output validator compiles; `SchemaTooLarge` when it is over 64 KiB.

    The schema is checked against the meta-schema of the draft it declares (the latest
    draft when it declares none), and every `pattern` must compile for the linear-time
    regex engine (no lookaround, no backreferences). `user_id`: whose checker time it is
    (None: the platform's own, uncounted). `field` names the schema in messages, and
    `invalid` is the error raised for one that does not compile (a version's contract
    says `invalid_schema`).
    """
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise invalid(f"{field} must be a JSON object.", fields={field: ["a JSON object"]})
    text = json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()
    if len(text) > OUTPUT_SCHEMA_MAX_BYTES:
        raise SchemaTooLarge(
            f"{field} is {len(text)} bytes as JSON; the limit is {OUTPUT_SCHEMA_MAX_BYTES}.",
            fields={field: [f"at most {OUTPUT_SCHEMA_MAX_BYTES} bytes"]},
        )
    digest = hashlib.sha256(text).hexdigest()
    if digest in _accepted:
        _accepted.move_to_end(digest)
        return
    refused = cache.get(_refused_key(digest))
    if refused is not None:
        raise invalid(f"{field} {refused}", fields={field: [refused]})
    checker_budget_left_or_refuse(user_id, field=field)
    began = time.monotonic()
    verdict = outputs.compile_schema(
        schema, timeout_s=OUTPUT_SCHEMA_COMPILE_SECONDS, wait_s=CHECKER_WAIT_SECONDS
    )
    if verdict.kind == outputs.BUSY:
        raise SchemaCheckerBusy()
    checker_time_charge(user_id, time.monotonic() - began)
    if verdict.ok:
        _accepted[digest] = None
        while len(_accepted) > ACCEPTED_REMEMBERED:
            _accepted.popitem(last=False)
        return
    if verdict.kind == outputs.SCHEMA_INVALID:
        reason = f"is not a valid JSON Schema: {_hint(verdict)}"
    else:
        reason = f"is too complex to compile: {verdict.message}."
    # Cached without the field's name: the same schema is refused under any name.
    cache.set(_refused_key(digest), reason, settings.SCHEMA_REFUSAL_CACHE_SECONDS)
    raise invalid(f"{field} {reason}", fields={field: [reason]})


def _refused_key(digest: str) -> str:
    return f"schema-refused:{digest}"


def _budget_key(user_id: int) -> tuple[str, float]:
    """This minute's counter of the user's checker time (ms), and seconds until the next."""
    now = time.time()
    return f"schema-check:{user_id}:{int(now // 60)}", 60 - now % 60


def checker_budget_left_or_refuse(user_id: int | None, *, field: str = "output_schema") -> None:
    """Raise `SchemaCheckBudgetSpent` when the user has used this minute's share of the
    checker (None: the platform, never refused)."""
    if user_id is None:
        return
    key, wait = _budget_key(user_id)
    spent_ms = cache.get(key) or 0
    allowed = settings.SCHEMA_CHECK_SECONDS_PER_MINUTE
    if spent_ms >= allowed * 1000:
        error = SchemaCheckBudgetSpent(
            f"Your schemas took {spent_ms / 1000:.1f} s of checking this minute; the share "
            f"is {allowed:g} s. Try again in {math.ceil(wait)} s, or send a simpler schema.",
            fields={field: [f"at most {allowed:g} s of checking a minute"]},
        )
        error.retry_after = math.ceil(wait)
        raise error


def checker_time_charge(user_id: int | None, seconds: float) -> None:
    """Count `seconds` of checker time against the user's share (None: uncounted)."""
    if user_id is None:
        return
    key, _ = _budget_key(user_id)
    cache.add(key, 0, 120)
    try:
        cache.incr(key, max(1, int(seconds * 1000)))
    except ValueError:  # expired in between: this minute starts with this check
        cache.set(key, max(1, int(seconds * 1000)), 120)


def _hint(verdict: outputs.Verdict) -> str:
    if verdict.message.endswith('is not a "regex"'):
        return (
            f"{verdict.message} (patterns are matched in linear time: no lookaround or "
            "backreferences, and each compiles to at most 1 MiB)"
        )
    return verdict.message
