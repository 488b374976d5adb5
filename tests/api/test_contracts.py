"""Contracts per binary version (SPEC §19): set at upload, listed, checked before money, and
described by a per-agent OpenAPI document."""

from __future__ import annotations

import hashlib
import json

import pytest
from openapi_spec_validator import validate as validate_openapi

from escrow.models import Escrow, Transfer
from marketplace.models import Agent, AgentBinary, Task
from tests.factories import MINIMAL_WASM, AgentBinaryFactory, held_for

from .conftest import balance, error, make_agent

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents/"
TASKS = "/api/v1/tasks/"
INPUT_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string"},
        "ignore_case": {"type": "boolean", "default": False},
        "min_length": {"type": "integer", "minimum": 1, "default": 1},
        "stop_words": {"type": "array", "items": {"type": "string", "maxLength": 10}},
    },
}
OUTPUT_SCHEMA = {"type": "object", "required": ["words"], "properties": {"words": {}}}
FUNDS = 10_000_000


def upload(client, slug="echo", wasm=MINIMAL_WASM, **fields):
    body = {"wasm": _file(wasm)}
    body.update({name: json.dumps(value) for name, value in fields.items()})
    return client.post(f"{AGENTS}{slug}/binaries/", body, format="multipart")


def _file(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("agent.wasm", data, content_type="application/wasm")


@pytest.fixture
def typed(bob) -> Agent:
    """bob's agent whose current version (1) takes a JSON input."""
    agent = make_agent(bob, slug="typed", with_binary=False)
    binary = AgentBinaryFactory.create(
        agent=agent, version=1, input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA
    )
    Agent.objects.filter(pk=agent.pk).update(current_binary=binary, output_schema=OUTPUT_SCHEMA)
    agent.refresh_from_db()
    return agent


def submit(client, **body):
    return client.post(
        TASKS,
        {"agent": "typed", "input": {"text": "a b"}, "budget": 250_000, **body},
        format="json",
    )


def nothing_moved(user) -> None:
    assert (Task.objects.count(), Escrow.objects.count()) == (0, 0)
    assert Transfer.objects.exclude(kind="deposit").count() == 0
    assert (balance(user), held_for(user)) == (FUNDS, 0)


# --- upload ---------------------------------------------------------------------------------


def test_an_upload_sets_the_versions_contract_and_the_agent_shows_it(as_bob, bob):
    make_agent(bob, with_binary=False)

    response = upload(as_bob, input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA)

    assert response.status_code == 201
    assert response.json()["version"] == 1
    binary = AgentBinary.objects.get()
    assert (binary.input_schema, binary.output_schema) == (INPUT_SCHEMA, OUTPUT_SCHEMA)
    detail = as_bob.get(f"{AGENTS}echo/").json()
    assert detail["contract"] == {
        "version": 1,
        "input_schema": INPUT_SCHEMA,
        "output_schema": OUTPUT_SCHEMA,
    }
    assert detail["output_schema"] == OUTPUT_SCHEMA


def test_the_same_bytes_with_a_new_contract_are_a_new_version(as_bob, bob):
    make_agent(bob, with_binary=False, output_schema={"type": "object"})

    first = upload(as_bob)
    again = upload(as_bob)
    typed = upload(as_bob, input_schema=INPUT_SCHEMA)
    kept = upload(as_bob)  # no schema named: the current contract, so nothing changes
    cleared = as_bob.post(
        f"{AGENTS}echo/binaries/",
        {"wasm": _file(MINIMAL_WASM), "input_schema": "", "output_schema": "null"},
        format="multipart",
    )

    assert [r.status_code for r in (first, again, typed, kept, cleared)] == [
        201,
        200,
        201,
        200,
        201,
    ]
    contracts = [
        (b.version, b.input_schema, b.output_schema)
        for b in AgentBinary.objects.order_by("version")
    ]
    assert contracts == [
        (1, None, {"type": "object"}),  # the schema the agent was created with
        (2, INPUT_SCHEMA, {"type": "object"}),
        (3, None, None),
    ]
    agent = Agent.objects.select_related("current_binary").get(slug="echo")
    assert agent.current_binary is not None
    assert (agent.current_binary.version, agent.output_schema) == (3, None)


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("input_schema", '{"type": 5}'),
        ("input_schema", "{nope"),
        ("input_schema", "[1]"),
        ("input_schema", '{"type": "number", "minimum": NaN}'),
        ("output_schema", '{"type": "string", "pattern": "^(?=a)"}'),
    ],
)
def test_a_schema_that_is_not_one_is_refused_at_upload(as_bob, bob, field, text):
    make_agent(bob, with_binary=False)

    response = as_bob.post(
        f"{AGENTS}echo/binaries/",
        {"wasm": _file(MINIMAL_WASM), field: text},
        format="multipart",
    )

    assert error(response) == (400, "invalid_schema")
    assert list(response.json()["error"]["fields"]) == [field]
    assert not AgentBinary.objects.exists()
    assert Agent.objects.get(slug="echo").current_binary_id is None


def test_an_agents_output_schema_is_read_only(as_bob, typed):
    response = as_bob.patch(f"{AGENTS}typed/", {"output_schema": {"type": "array"}}, format="json")

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["output_schema"]
    typed.refresh_from_db()
    assert typed.output_schema == OUTPUT_SCHEMA
    assert AgentBinary.objects.get().output_schema == OUTPUT_SCHEMA


def test_the_versions_list_every_version_with_its_contract(as_alice, typed):
    AgentBinaryFactory.create(agent=typed, version=2, input_schema=None, output_schema=None)

    body = as_alice.get(f"{AGENTS}typed/versions/", {"page_size": 1}).json()
    rest = as_alice.get(f"{AGENTS}typed/versions/", {"page_size": 1, "page": 2}).json()

    assert body["count"] == 2 and body["next"] is not None and body["previous"] is None
    assert [(v["version"], v["input_schema"], v["output_schema"]) for v in body["results"]] == [
        (2, None, None)
    ]
    assert [(v["version"], v["input_schema"], v["output_schema"]) for v in rest["results"]] == [
        (1, INPUT_SCHEMA, OUTPUT_SCHEMA)
    ]
    assert set(rest["results"][0]) == {
        "version",
        "sha256",
        "size",
        "input_schema",
        "output_schema",
        "created_at",
    }
    assert error(as_alice.get(f"{AGENTS}nope/versions/")) == (404, "agent_not_found")


# --- input checked before money -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ({}, "/text"),
        ({"text": 5}, "/text"),
        ({"text": "a", "min_length": 0}, "/min_length"),
        ({"text": "a", "stop_words": ["ok", "far too long"]}, "/stop_words/1"),
        ({"text": "a", "colour": "red"}, ""),
        ("just text", ""),
        (None, ""),
    ],
)
def test_an_input_that_breaks_the_schema_is_refused_before_money_moves(
    as_alice, funded_alice, typed, given, path
):
    response = submit(as_alice, input=given)

    assert error(response) == (400, "invalid_input")
    assert response.json()["error"]["fields"] == {"path": path}
    nothing_moved(funded_alice)


def test_an_invalid_input_through_an_api_key_charges_the_key_nothing(funded_alice, typed):
    from rest_framework.test import APIClient

    from marketplace.apikey_models import ApiKeyCharge
    from marketplace.apikeys import api_key_create, api_key_spending

    key, raw = api_key_create(
        user=funded_alice, name="robot", scopes=["tasks:write"], limits={"daily": 1_000_000}
    )
    robot = APIClient()
    robot.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    refused = submit(robot, input={"text": 5})
    accepted = submit(robot)

    assert error(refused) == (400, "invalid_input")
    assert accepted.status_code == 201
    assert ApiKeyCharge.objects.count() == 1
    key.refresh_from_db()
    assert api_key_spending(key).daily == 250_000
    assert balance(funded_alice) == FUNDS - 250_000


def test_an_input_check_waits_for_the_users_share_of_the_checker(as_alice, funded_alice, typed):
    from marketplace.schemas import checker_time_charge

    checker_time_charge(funded_alice.pk, 60.0)  # this minute's share, and more, used up

    response = submit(as_alice)

    assert error(response) == (429, "schema_check_budget")
    assert list(response.json()["error"]["fields"]) == ["input"]
    nothing_moved(funded_alice)


def test_a_missing_property_is_pointed_at_where_it_would_be(as_alice, funded_alice, bob):
    schema = {
        "type": "object",
        "properties": {
            "a/b": {"type": "object", "required": ["n~1"], "properties": {"n~1": {}}},
        },
    }
    agent = make_agent(bob, slug="nested", with_binary=False)
    binary = AgentBinaryFactory.create(agent=agent, version=1, input_schema=schema)
    Agent.objects.filter(pk=agent.pk).update(current_binary=binary)

    response = submit(as_alice, agent="nested", input={"a/b": {}})

    assert error(response) == (400, "invalid_input")
    assert response.json()["error"]["fields"] == {"path": "/a~1b/n~01"}
    nothing_moved(funded_alice)


def test_a_valid_json_input_is_stored_as_json_and_shown_back_as_it_was_sent(
    as_alice, funded_alice, typed
):
    given = {"text": "Hello, wörld", "min_length": 2, "ignore_case": True}

    response = submit(as_alice, input=given)

    assert response.status_code == 201
    assert (response.json()["input"], response.json()["version"]) == (given, 1)
    task = Task.objects.get()
    stored = '{"ignore_case":true,"min_length":2,"text":"Hello, wörld"}'
    assert task.input == stored
    assert task.input_sha256 == hashlib.sha256(stored.encode()).hexdigest()
    shown = as_alice.get(f"{TASKS}{task.pk}/").json()
    assert (shown["input"], shown["version"]) == (given, 1)
    listed = as_alice.get(TASKS).json()["results"][0]
    assert listed["version"] == 1 and "input" not in listed
    assert balance(funded_alice) == FUNDS - 250_000


def test_a_version_without_an_input_schema_takes_a_string(as_alice, funded_alice, echo):
    response = as_alice.post(
        TASKS, {"agent": "echo", "input": {"text": "a"}, "budget": 250_000}, format="json"
    )

    assert error(response) == (400, "invalid_input")
    assert response.json()["error"]["fields"] == {"path": ""}
    nothing_moved(funded_alice)


# --- versions -------------------------------------------------------------------------------


def test_a_task_may_name_an_older_version_and_gets_its_contract(as_alice, funded_alice, typed):
    newer = AgentBinaryFactory.create(agent=typed, version=2, input_schema=None)
    Agent.objects.filter(pk=typed.pk).update(current_binary=newer, output_schema=None)

    text = submit(as_alice, input="plain text")
    pinned = submit(as_alice, input={"text": "a b"}, version=1)
    refused = submit(as_alice, input="plain text", version=1)

    assert (text.status_code, text.json()["version"], text.json()["input"]) == (
        201,
        2,
        "plain text",
    )
    assert (pinned.status_code, pinned.json()["version"]) == (201, 1)
    assert Task.objects.get(pk=pinned.json()["id"]).binary.version == 1
    assert error(refused) == (400, "invalid_input")
    assert Task.objects.count() == 2


@pytest.mark.parametrize("version", [3, 0, -1, 2**40])
def test_an_unknown_version_is_refused_before_money_moves(as_alice, funded_alice, typed, version):
    response = submit(as_alice, version=version)

    assert error(response) == (400, "version_not_found")
    nothing_moved(funded_alice)


def test_a_version_that_is_not_a_number_is_a_validation_error(as_alice, funded_alice, typed):
    response = submit(as_alice, version="1")

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["version"]
    nothing_moved(funded_alice)


# --- the per-agent OpenAPI document ---------------------------------------------------------


def test_each_agents_openapi_document_validates_and_types_its_run(as_alice, typed, echo):
    for slug in ("typed", "echo"):
        response = as_alice.get(f"{AGENTS}{slug}/openapi.json")
        assert response.status_code == 200
        validate_openapi(response.json())

    document = as_alice.get(f"{AGENTS}typed/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert list(document["paths"]) == ["/api/v1/tasks/"]
    assert list(document["paths"]["/api/v1/tasks/"]) == ["post"]
    operation = document["paths"]["/api/v1/tasks/"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["input"] == INPUT_SCHEMA
    assert body["properties"]["agent"] == {"const": "typed", "description": "This agent's slug."}
    task = operation["responses"]["201"]["content"]["application/json"]["schema"]
    assert task == {"$ref": "#/components/schemas/Task"}
    output = document["components"]["schemas"]["Task"]["properties"]["result"]["properties"][
        "output"
    ]
    assert output["contentMediaType"] == "application/json"
    assert output["contentSchema"] == OUTPUT_SCHEMA
    price = {"base_fee": 1_000, "fuel_price": 2_000}
    assert document["x-agent-price"] == operation["x-agent-price"] == price
    assert "1,000 µCR" in document["info"]["description"]
    assert "2,000 µCR (0.002 CR) per million units of fuel" in document["info"]["description"]

    untyped = as_alice.get(f"{AGENTS}echo/openapi.json").json()
    untyped_body = untyped["paths"]["/api/v1/tasks/"]["post"]["requestBody"]["content"]
    assert untyped_body["application/json"]["schema"]["properties"]["input"]["type"] == "string"


def test_a_real_task_matches_the_documents_task_and_its_output_the_output_schema(
    as_alice, funded_alice, typed
):
    import jsonschema

    from execution.services import Execution, task_claim, task_settle

    task_id = submit(as_alice, input={"text": "a b a"}).json()["id"]
    claim = task_claim(task_id=task_id)
    assert claim is not None
    output = b'{"words": 3}'
    ran = Execution(reason="", exit_code=0, fuel_used=1_000, stdout=output)
    assert task_settle(task_id=task_id, attempt=claim[1], execution=ran)
    document = as_alice.get(f"{AGENTS}typed/openapi.json").json()
    shown = as_alice.get(f"{TASKS}{task_id}/").json()

    task_schema = document["components"]["schemas"]["Task"]
    jsonschema.Draft202012Validator(task_schema).validate(shown)
    output_schema = task_schema["properties"]["result"]["properties"]["output"]["contentSchema"]
    jsonschema.Draft202012Validator(output_schema).validate(json.loads(shown["result"]["output"]))
    assert shown["status"] == "succeeded" and set(shown) <= set(task_schema["properties"])


def test_a_schemas_own_references_still_resolve_in_the_document(as_alice, bob):
    schema = {
        "type": "object",
        "properties": {"point": {"$ref": "#/$defs/point"}},
        "$defs": {"point": {"type": "array", "items": {"type": "number"}}},
    }
    agent = make_agent(bob, slug="geo", with_binary=False)
    binary = AgentBinaryFactory.create(
        agent=agent, version=1, input_schema=schema, output_schema=schema
    )
    Agent.objects.filter(pk=agent.pk).update(current_binary=binary)

    document = as_alice.get(f"{AGENTS}geo/openapi.json").json()

    validate_openapi(document)
    operation = document["paths"]["/api/v1/tasks/"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"][
        "properties"
    ]["point"]["$ref"]
    assert _resolve(document, ref) == {"type": "array", "items": {"type": "number"}}
    output = document["components"]["schemas"]["Task"]["properties"]["result"]["properties"][
        "output"
    ]["contentSchema"]
    assert _resolve(document, output["properties"]["point"]["$ref"])["type"] == "array"


def _resolve(document, ref: str):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_an_agent_without_a_version_has_no_document(as_alice, bob):
    make_agent(bob, slug="bare", with_binary=False)

    assert error(as_alice.get(f"{AGENTS}bare/openapi.json")) == (409, "agent_has_no_binary")
    assert error(as_alice.get(f"{AGENTS}nope/openapi.json")) == (404, "agent_not_found")
