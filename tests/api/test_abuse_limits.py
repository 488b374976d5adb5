"""What a client can send is bounded: output schemas over 64 KiB or that the checker cannot
compile, upload bombs, and uploads past the per-user rate."""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from marketplace.models import Agent, AgentBinary, Task
from marketplace.schemas import OUTPUT_SCHEMA_MAX_BYTES
from tests.sandbox.test_upload_bombs import empty_functions

from .conftest import MINIMAL_WASM, error, make_agent

AGENTS = "/api/v1/agents/"
TASKS = "/api/v1/tasks/"

pytestmark = pytest.mark.django_db


def schema_of_size(size: int) -> dict:
    """A valid schema whose compact JSON is exactly `size` bytes."""
    base = '{"description":"","type":"object"}'
    return {"description": "x" * (size - len(base)), "type": "object"}


def submit(client, **body):
    return client.post(TASKS, {"agent": "echo", "input": "hi", "budget": 250_000, **body})


def upload(client, slug: str, data: bytes):
    wasm = SimpleUploadedFile("agent.wasm", data)
    return client.post(f"{AGENTS}{slug}/binaries/", {"wasm": wasm}, format="multipart")


# --- output schemas ---------------------------------------------------------------------------


def test_a_schema_of_64_kib_is_accepted_and_one_byte_more_is_schema_too_large(
    as_alice, funded_alice, echo
):
    accepted = submit(as_alice, output_schema=schema_of_size(OUTPUT_SCHEMA_MAX_BYTES))
    assert accepted.status_code == 201, accepted.json()

    response = submit(as_alice, output_schema=schema_of_size(OUTPUT_SCHEMA_MAX_BYTES + 1))

    assert error(response) == (400, "schema_too_large")
    assert response.json()["error"]["message"] == (
        "output_schema is 65537 bytes as JSON; the limit is 65536."
    )
    assert Task.objects.count() == 1


def test_an_agent_schema_over_64_kib_is_refused_on_create_and_on_change(as_bob, echo):
    too_large = schema_of_size(OUTPUT_SCHEMA_MAX_BYTES + 1)
    new = {"slug": "big", "name": "Big", "base_fee": 1, "fuel_price": 1}

    assert error(as_bob.post(AGENTS, {**new, "output_schema": too_large})) == (
        400,
        "schema_too_large",
    )
    # An agent's output schema is its current version's: read-only, whatever its size.
    assert error(as_bob.patch(f"{AGENTS}echo/", {"output_schema": too_large})) == (
        400,
        "validation_error",
    )
    assert not Agent.objects.filter(slug="big").exists()
    echo.refresh_from_db()
    assert echo.output_schema is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^(?=a)a+$"},  # lookahead
        {"type": "string", "pattern": r"^(a+)\1$"},  # backreference
        {"$ref": "https://example.com/schema.json"},  # would need fetching
    ],
)
def test_a_schema_the_checker_cannot_compile_is_refused_at_submission(
    as_alice, funded_alice, as_bob, echo, schema
):
    response = submit(as_alice, output_schema=schema)

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["output_schema"]
    assert error(as_bob.patch(f"{AGENTS}echo/", {"output_schema": schema})) == (
        400,
        "validation_error",
    )
    assert not Task.objects.exists()


def test_a_catastrophic_pattern_compiles_and_is_accepted(as_alice, funded_alice, echo):
    # It backtracks in Python's `re`, not in the linear-time engine the checker uses.
    response = submit(as_alice, output_schema={"type": "string", "pattern": "^(a|a)*$"})

    assert response.status_code == 201


# --- uploads ------------------------------------------------------------------------------


def test_an_upload_bomb_is_refused_within_a_second(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False)
    bomb = empty_functions(1_000_000)  # 4 MB; minutes to compile

    started = time.monotonic()
    response = upload(as_bob, "fresh", bomb)

    assert time.monotonic() - started < 1.0
    assert error(response) == (400, "wasm_too_many_functions")
    assert not AgentBinary.objects.exists()


def test_a_slow_compile_is_refused_at_the_deadline(as_bob, bob, settings):
    settings.WASM_COMPILE_TIMEOUT_MS = 500
    make_agent(bob, slug="fresh", with_binary=False)

    started = time.monotonic()
    response = upload(as_bob, "fresh", empty_functions(45_000))

    assert time.monotonic() - started < 1.5
    assert error(response) == (400, "wasm_compile_timeout")
    assert response.json()["error"]["fields"] == {"limit_ms": 500}


def test_uploads_past_the_rate_are_429_for_that_user_only(
    as_bob, bob, as_charlie, charlie, settings
):
    settings.API_UPLOAD_THROTTLE_RATE = "3/hour"
    make_agent(bob, slug="fresh", with_binary=False)
    make_agent(charlie, slug="other", with_binary=False)

    statuses = [upload(as_bob, "fresh", data).status_code for data in (MINIMAL_WASM, b"x", b"y")]
    throttled = upload(as_bob, "fresh", MINIMAL_WASM)

    assert statuses == [201, 400, 400]  # refused uploads count too: each cost a check
    assert error(throttled) == (429, "throttled")
    assert 3500 < int(throttled["Retry-After"]) <= 3600
    assert upload(as_charlie, "other", MINIMAL_WASM).status_code == 201
