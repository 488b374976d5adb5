"""The upload page sets a version's contract (SPEC §19): filled in with the current one, a
changed contract is a new version, a schema that is not one is refused next to its field."""

from __future__ import annotations

import json

import pytest

from marketplace.models import Agent, AgentBinary
from tests.views.conftest import HTMX, MINIMAL_WASM, fragment, make_agent
from tests.views.test_agents import field_errors, upload_url, wasm_file

pytestmark = pytest.mark.django_db

INPUT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
OUTPUT = {"type": "object"}


def post(client, slug: str = "fresh", headers: dict | None = None, **fields):
    body = {"wasm": wasm_file(MINIMAL_WASM), **fields}
    return client.post(upload_url(slug), body, **(headers or {}))


def test_an_upload_from_the_page_sets_the_contract_and_the_page_shows_it(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False, output_schema=OUTPUT)
    form = as_bob.get(upload_url("fresh")).content.decode()
    # Before any version: the schema the agent was listed with.
    assert "&quot;type&quot;: &quot;object&quot;" in form

    response = post(as_bob, input_schema=json.dumps(INPUT), output_schema=json.dumps(OUTPUT))

    assert response.status_code == 302
    binary = AgentBinary.objects.get()
    assert (binary.version, binary.input_schema, binary.output_schema) == (1, INPUT, OUTPUT)
    again = as_bob.get(upload_url("fresh")).content.decode()
    assert "Filled in with version 1" in again and "&quot;required&quot;" in again
    detail = as_bob.get(response["Location"]).content.decode()
    assert "typed input" in detail and "typed output" in detail


def test_the_same_binary_with_another_contract_is_a_new_version(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False)
    post(as_bob, output_schema=json.dumps(OUTPUT))

    same = post(as_bob, output_schema=json.dumps(OUTPUT))
    assert "That is already version 1." in as_bob.get(same["Location"]).content.decode()
    changed = post(as_bob, input_schema=json.dumps(INPUT), output_schema=json.dumps(OUTPUT))
    assert "Version 2 is live" in as_bob.get(changed["Location"]).content.decode()

    assert [
        (b.version, b.input_schema, b.output_schema)
        for b in AgentBinary.objects.order_by("version")
    ] == [(1, None, OUTPUT), (2, INPUT, OUTPUT)]
    assert Agent.objects.get(slug="fresh").output_schema == OUTPUT


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("input_schema", "{nope", "Not valid JSON"),
        ("input_schema", "[1]", "A JSON Schema is a JSON object."),
        ("input_schema", '{"type": 5}', "input_schema is not a valid JSON Schema"),
        ("output_schema", '{"pattern": "(a)\\\\1"}', "output_schema is not a valid JSON Schema"),
    ],
)
def test_a_schema_that_is_not_one_is_refused_next_to_its_field(as_bob, bob, field, text, message):
    make_agent(bob, slug="fresh", with_binary=False)

    response = post(as_bob, **{field: text})

    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), field)
    assert not AgentBinary.objects.exists()


def test_an_htmx_upload_gets_a_schema_error_in_place(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False)

    body = fragment(post(as_bob, input_schema='{"type": 5}', headers=HTMX))

    assert body.lstrip().startswith('<form id="binary-form"')
    assert "not a valid JSON Schema" in body
