"""A task runs the version it names, under that version's contract (SPEC §19): real wasmtime,
the executor's own entry point, and the receipt that names the version. And the migration
that gave existing versions their agent's output schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from escrow.models import Escrow
from execution.engine import modules
from execution.engine.receipts import receipt_sign, receipt_verify
from execution.services import task_execute
from marketplace.binaries import binary_upload
from marketplace.models import Agent, AgentBinary, Task
from marketplace.services import task_submit
from tests.factories import AgentFactory, balance, held_for
from tests.wasm_modules import FD_WRITE, module, write

FUNDS = 10_000_000
BUDGET = 100_000
ECHO = (Path(__file__).resolve().parents[1] / "agents" / "dist" / "echo.wasm").read_bytes()
OBJECT = module(f'(func (export "_start") {write("{}")})', FD_WRITE)
ARRAY = module(f'(func (export "_start") {write("[]")})', FD_WRITE)


@pytest.fixture(autouse=True)
def _wasm_cache(settings, tmp_path):
    settings.WASM_CACHE_DIR = tmp_path / "wasm-cache"
    modules.clear_memory_cache()


@pytest.fixture
def requester(alice):
    from escrow.services import deposit_create

    deposit_create(user_id=alice.pk, amount=FUNDS)
    return alice


def run(requester: Any, agent: Agent, **options: Any) -> Task:
    options.setdefault("input", "x")
    task = task_submit(requester=requester, agent=agent, budget=BUDGET, **options)
    task_execute(task_id=task.pk)
    task.refresh_from_db()
    return task


def payload(task: Task) -> dict[str, Any]:
    return json.loads(task.receipt.payload)


@pytest.mark.django_db
def test_a_task_pinned_to_an_old_version_runs_it_and_its_receipt_names_it(requester, bob):
    agent = AgentFactory.create(owner=bob, slug="versioned")
    binary_upload(agent=agent, data=OBJECT, output_schema={"type": "object"})
    binary_upload(agent=agent, data=ARRAY, output_schema={"type": "array"})

    old = run(requester, agent, version=1)
    current = run(requester, agent)

    assert (old.status, bytes(old.stdout), old.binary.version) == ("succeeded", b"{}", 1)
    assert (current.status, bytes(current.stdout), current.binary.version) == (
        "succeeded",
        b"[]",
        2,
    )
    for task, version in ((old, 1), (current, 2)):
        signed = payload(task)
        assert (signed["agent_version"], signed["receipt_version"]) == (version, 3)
        assert signed["binary_sha256"] == task.binary.sha256
        assert receipt_verify(task.receipt.as_dict())
    assert old.cost and current.cost
    assert balance(requester) == FUNDS - old.cost - current.cost
    assert held_for(requester) == 0


@pytest.mark.django_db
def test_the_output_is_checked_against_the_schema_of_the_version_that_ran(requester, bob):
    agent = AgentFactory.create(owner=bob, slug="versioned")
    binary_upload(agent=agent, data=OBJECT, output_schema={"type": "object"})
    # The same bytes under a contract they break: a new version.
    binary_upload(agent=agent, data=OBJECT, output_schema={"type": "array"})

    kept = run(requester, agent, version=1)
    broken = run(requester, agent)

    assert (kept.status, kept.binary.version) == ("succeeded", 1)
    assert (broken.status, broken.failure_reason, broken.binary.version) == (
        "failed",
        "invalid_output",
        2,
    )
    assert (broken.cost, broken.refund) == (0, BUDGET)
    assert Escrow.objects.get(task=broken).status == "refunded"
    assert payload(broken)["agent_version"] == 2
    assert kept.cost
    assert balance(requester) == FUNDS - kept.cost


@pytest.mark.django_db
def test_a_json_input_reaches_the_agent_as_json(requester, bob):
    agent = AgentFactory.create(owner=bob, slug="echo")
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    binary_upload(agent=agent, data=ECHO, input_schema=schema)

    task = run(requester, agent, input={"text": "héllo", "n": [1, 2.5, None]})

    expected = '{"n":[1,2.5,null],"text":"héllo"}'.encode()
    assert (task.status, bytes(task.stdout)) == ("succeeded", expected)
    assert payload(task)["input_sha256"] == hashlib.sha256(expected).hexdigest()


@pytest.mark.django_db
def test_a_receipt_from_before_versions_still_verifies(client):
    old_format = {"task_id": "0" * 32, "agent": "echo", "status": "succeeded", "cost": 1}
    receipt = receipt_sign(old_format)

    assert receipt_verify(receipt)
    response = client.post("/api/v1/receipts/verify/", receipt, content_type="application/json")
    assert response.json() == {"valid": True}


# --- the migration --------------------------------------------------------------------------

BEFORE = ("marketplace", "0017_admin_action_permissions")
AFTER = ("marketplace", "0018_binary_contracts")


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_every_version_its_agents_output_schema_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE]).apps
    User = old.get_model("auth", "User")
    OldAgent, OldBinary = (
        old.get_model("marketplace", "Agent"),
        old.get_model("marketplace", "AgentBinary"),
    )
    bob = User.objects.create(username="bob")
    schema = {"type": "object", "required": ["words"]}

    def agent(slug: str, output_schema: Any, versions: int) -> Any:
        made = OldAgent.objects.create(
            owner=bob, slug=slug, name=slug, base_fee=1, fuel_price=1, output_schema=output_schema
        )
        for version in range(1, versions + 1):
            binary = OldBinary.objects.create(
                agent=made,
                version=version,
                sha256=f"{version:064d}",
                size=8,
                storage_name=f"wasm/{version}.wasm",
            )
        OldAgent.objects.filter(pk=made.pk).update(current_binary=binary)
        return made

    agent("typed", schema, 2)
    agent("plain", None, 1)

    executor.loader.build_graph()
    executor.migrate([AFTER])
    new = executor.loader.project_state([AFTER]).apps
    Binary = new.get_model("marketplace", "AgentBinary")
    contracts = {
        (b.agent.slug, b.version): (b.input_schema, b.output_schema)
        for b in Binary.objects.select_related("agent")
    }
    assert contracts == {
        ("typed", 1): (None, schema),
        ("typed", 2): (None, schema),
        ("plain", 1): (None, None),
    }

    # Back: the agent's schema is its current version's.
    NewAgent = new.get_model("marketplace", "Agent")
    current = NewAgent.objects.get(slug="typed").current_binary
    Binary.objects.filter(pk=current.pk).update(output_schema={"type": "array"})
    executor.loader.build_graph()
    executor.migrate([BEFORE])
    assert OldAgent.objects.get(slug="typed").output_schema == {"type": "array"}

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert AgentBinary.objects.count() == 3
    assert Agent.objects.get(slug="plain").output_schema is None


# --- through a real worker ------------------------------------------------------------------

WORDSTATS = (
    Path(__file__).resolve().parents[1] / "agents" / "dist" / "wordstats.wasm"
).read_bytes()
WORDSTATS_CONTRACT = json.loads(
    (Path(__file__).resolve().parents[1] / "agents" / "contracts" / "wordstats.json").read_text()
)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_typed_agent_runs_a_pinned_version_through_a_real_worker(client):
    from escrow.services import deposit_create
    from marketplace.apikeys import api_key_create
    from tests.factories import UserFactory
    from tests.workers import Cluster, wait_for

    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = AgentFactory.create(owner=bob, slug="wordstats", base_fee=1_000, fuel_price=1_000)
    binary_upload(agent=agent, data=WORDSTATS, **WORDSTATS_CONTRACT)
    # Version 2: the same bytes, with no contract (its input is plain text).
    binary_upload(agent=agent, data=WORDSTATS, input_schema=None, output_schema=None)
    _, raw = api_key_create(user=alice, name="robot", scopes=["tasks:write", "tasks:read"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    body = {"agent": "wordstats", "budget": BUDGET, "version": 1}

    def post(**fields: Any):
        return client.post(
            "/api/v1/tasks/", {**body, **fields}, content_type="application/json", **headers
        )

    refused = post(input={"text": "a", "top": 99})
    typed = post(input={"text": "b a b", "top": 1})
    assert refused.status_code == 400 and refused.json()["error"]["fields"] == {"path": "/top"}
    assert typed.status_code == 201, typed.json()
    task_id = typed.json()["id"]

    with Cluster() as cluster:
        wait_for(
            lambda: Task.objects.get(pk=task_id).is_final,
            timeout=30,
            message="task to finish",
            cluster=cluster,
        )

    shown = client.get(f"/api/v1/tasks/{task_id}/", **headers).json()
    assert (shown["status"], shown["version"], shown["input"]) == (
        "succeeded",
        1,
        {"text": "b a b", "top": 1},
    )
    assert json.loads(shown["result"]["output"]) == {
        "words": 3,
        "unique": 2,
        "top": [{"word": "b", "count": 2}],
    }
    task = Task.objects.get(pk=task_id)
    signed = payload(task)
    assert (signed["agent_version"], signed["receipt_version"]) == (1, 3)
    assert receipt_verify(task.receipt.as_dict())
    assert task.cost and balance(alice) == FUNDS - task.cost and held_for(alice) == 0
    assert Task.objects.count() == 1
