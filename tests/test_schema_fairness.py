"""One user's slow output schemas can't make other users' submissions fail (SPEC §23).

Found by a review: one user sending 56–62 KB schemas of 1,400 distinct bounded repetitions,
each refused after 2 s, made two of three honest submissions made meanwhile fail with "too
complex to compile": the process's one schema checker was busy, and the wait counted
against their own 2 s."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from escrow.services import deposit_create
from execution.engine import outputs
from marketplace.binaries import binary_upload
from tests.factories import AgentFactory, UserFactory

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
HONEST = {"type": "object", "properties": {"n": {"type": "integer"}}}


def slow_schema(salt: str) -> dict:
    """1,400 distinct patterns, each a bounded repetition: seconds to compile, under 64 KiB."""
    return {
        "type": "object",
        "properties": {f"p{i}": {"pattern": f"^{salt}x{i}.{{0,700}}$"} for i in range(1400)},
    }


def submit(user, schema: dict) -> tuple[int, str]:
    client = APIClient()
    client.force_authenticate(user)
    body = {"agent": "echo", "input": "{}", "budget": 10_000, "output_schema": schema}
    response = client.post("/api/v1/tasks/", body, format="json")
    return response.status_code, response.content.decode()


@pytest.fixture
def people(db):
    mallory, bob = UserFactory.create(username="mallory"), UserFactory.create(username="bob")
    honest = [UserFactory.create(username=f"honest{i}") for i in range(3)]
    for user in (mallory, *honest):
        deposit_create(user_id=user.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    outputs.compile_schema({}, timeout_s=30)  # the checker process is up before the clock
    return mallory, honest


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_honest_submissions_pass_while_another_users_schemas_keep_the_checker_busy(capsys):
    UserFactory.create(username="mallory")
    bob = UserFactory.create(username="bob")
    honest = [UserFactory.create(username=f"honest{i}") for i in range(3)]
    for user in honest:
        deposit_create(user_id=user.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1, fuel_price=0)
    binary_upload(agent=agent, data=ECHO.read_bytes())
    outputs.compile_schema({}, timeout_s=30)  # the checker process is up before the clock
    stop = threading.Event()
    refused: list[str] = []

    def flood(thread: int) -> None:
        # Mallory's requests in flight, back to back: each schema holds the checker until
        # it is stopped at 2 s (what her submissions do, minus the request around them).
        for n in range(100):
            if stop.is_set():
                return
            verdict = outputs.compile_schema(slow_schema(f"{thread}-{n}"), timeout_s=2.0)
            refused.append(verdict.kind)

    attackers = [threading.Thread(target=flood, args=(i,)) for i in range(3)]
    for attacker in attackers:
        attacker.start()
    results: list[tuple[int, str]] = []
    try:
        for user in honest:
            time.sleep(0.5)
            results.append(submit(user, HONEST))
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join()
    with capsys.disabled():
        print(
            f"\n  {len(refused)} of mallory's schemas checked meanwhile; honest submissions: "
            f"{[status for status, _ in results]}"
        )
    assert set(refused) <= {outputs.TOO_SLOW, outputs.TOO_BIG}
    assert [status for status, _ in results] == [201, 201, 201], results


def test_a_refused_schema_is_refused_again_without_compiling(people, monkeypatch):
    mallory, _ = people
    first = time.monotonic()
    assert submit(mallory, slow_schema("d"))[0] == 400
    took = time.monotonic() - first
    asked: list[object] = []
    monkeypatch.setattr(outputs, "compile_schema", lambda *a, **k: asked.append(a))
    again = time.monotonic()
    status, body = submit(mallory, slow_schema("d"))
    assert (status, asked) == (400, [])
    assert "too complex to compile" in body
    assert time.monotonic() - again < 0.5 < took


def test_a_user_past_their_share_of_checking_is_refused_at_once(people, settings):
    settings.SCHEMA_CHECK_SECONDS_PER_MINUTE = 3
    mallory, honest = people
    # The share is counted per clock minute: the three submissions (about 4 s) must fall
    # in one, or the third starts a fresh share and is checked (and refused) as usual.
    if 60 - time.time() % 60 < 10:
        time.sleep(60 - time.time() % 60 + 0.1)
    assert submit(mallory, slow_schema("e"))[0] == 400  # about 2 s each
    assert submit(mallory, slow_schema("f"))[0] == 400
    clock = time.monotonic()
    status, body = submit(mallory, slow_schema("g"))
    assert status == 429 and '"schema_check_budget"' in body
    assert time.monotonic() - clock < 0.5
    assert submit(honest[0], HONEST)[0] == 201  # the share is mallory's, not everyone's
