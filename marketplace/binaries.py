"""Agent binaries: validated uploads, stored once per content, versioned per agent, and
uploaded at a bounded rate per user (each one is compiled, which is the costly part)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max
from rest_framework.throttling import UserRateThrottle

from execution.engine.validation import validate_wasm
from marketplace.contracts import contract_schema_check
from marketplace.models import Agent, AgentBinary
from marketplace.storage import binary_storage

logger = logging.getLogger(__name__)


class UploadRateThrottle(UserRateThrottle):
    """Binary uploads per user (`API_UPLOAD_THROTTLE_RATE`), the API's and the pages'
    together: every upload, accepted or not, costs a compile in a child process."""

    scope = "uploads"

    def get_rate(self) -> str:
        # Read per request, so that a changed setting applies (DRF reads its rates once).
        return settings.API_UPLOAD_THROTTLE_RATE


def binary_upload_refusal(request: Any) -> str | None:
    """Why this user may not upload a binary now, or None when they may (the attempt is
    then counted). For the pages; the API applies `UploadRateThrottle` itself."""
    throttle = UploadRateThrottle()
    no_view: Any = None  # a user's rate does not depend on the view
    if throttle.allow_request(request, no_view):
        return None
    minutes = max(1, math.ceil((throttle.wait() or 0) / 60))
    return (
        f"You have uploaded as many binaries as allowed for now "
        f"({settings.API_UPLOAD_THROTTLE_RATE}); try again in {minutes} minute"
        + ("s." if minutes != 1 else ".")
    )


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


# An upload that names no input or output schema keeps the agent's current one.
KEEP: Any = _Keep()


def binary_storage_name(sha256: str) -> str:
    return f"wasm/{sha256[:2]}/{sha256}.wasm"


def binary_upload(
    *, agent: Agent, data: bytes, input_schema: Any = KEEP, output_schema: Any = KEEP
) -> AgentBinary:
    """Validate `data` and its contract, store it by content, and make it the agent's
    next version.

    The contract (SPEC §19) is `input_schema` and `output_schema`, each a JSON Schema or
    None; one not given is the current version's (the first version's output schema is
    the one the agent was created with). Raises `InvalidSchema` for a schema that is not
    one, and a `WasmInvalid` subclass if the binary is rejected (nothing is stored either
    way). Uploading the agent's current binary with its current contract changes nothing
    and returns it; the same bytes with another contract, or the bytes of an older version,
    become a new version (which is how an owner rolls back). A version is never changed.
    """
    for field, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
        if schema is not KEEP:
            contract_schema_check(schema, field=field, user_id=agent.owner_id)
    validated = validate_wasm(data)
    # File I/O stays outside the transaction; an orphaned file is harmless and is reused
    # by the next upload of the same bytes.
    storage_name = _store(validated.sha256, data)

    with transaction.atomic(durable=True):
        # The agent row lock serialises uploads, so versions are dense and never collide.
        locked = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        current = locked.current_binary
        contract = {
            "input_schema": (current.input_schema if current is not None else None)
            if input_schema is KEEP
            else input_schema,
            "output_schema": locked.output_schema if output_schema is KEEP else output_schema,
        }
        if (
            current is not None
            and current.sha256 == validated.sha256
            and _same_json(current.input_schema, contract["input_schema"])
            and _same_json(current.output_schema, contract["output_schema"])
        ):
            binary = current
        else:
            last = locked.binaries.aggregate(last=Max("version"))["last"] or 0
            binary = AgentBinary.objects.create(
                agent=locked,
                version=last + 1,
                sha256=validated.sha256,
                size=validated.size,
                storage_name=storage_name,
                **contract,
            )
            # The agent's `output_schema` is its current version's, kept in step here.
            Agent.objects.filter(pk=locked.pk).update(
                current_binary=binary, output_schema=binary.output_schema
            )
    agent.current_binary = binary
    agent.output_schema = binary.output_schema
    return binary


def _same_json(a: Any, b: Any) -> bool:
    # Exactly the same document: Python's == takes 1, 1.0 and true for one another.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def binary_read(binary: AgentBinary) -> bytes:
    with binary_storage().open(binary.storage_name, "rb") as handle:
        return handle.read()


def _store(sha256: str, data: bytes) -> str:
    name = binary_storage_name(sha256)
    storage = binary_storage()
    if storage.exists(name):
        with storage.open(name, "rb") as handle:
            if hashlib.sha256(handle.read()).hexdigest() == sha256:
                return name
        # Storage writes are not atomic: a crash mid-save leaves a short file behind.
        logger.warning("stored binary %s does not match its hash; rewriting it", name)
        storage.delete(name)
    return storage.save(name, ContentFile(data))
