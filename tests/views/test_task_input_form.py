"""The task form built from the input schema of the agent's current version (SPEC §19):
its fields, its errors next to the right field, a run from it, with and without htmx."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from escrow.audit import ledger_audit
from escrow.models import Escrow
from marketplace.models import Agent, AgentBinary, Task
from marketplace.task_input import input_contract_token
from tests.factories import AgentBinaryFactory
from tests.views.conftest import FUNDS, HTMX, balance, fragment, make_agent, page

ROOT = Path(__file__).resolve().parent.parent.parent
NEW = reverse("task-new")
KEY = "task-form-key-0123456789"

pytestmark = pytest.mark.django_db

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "description": "The text whose words are counted."},
        "mode": {"enum": ["words", "lines"], "default": "words"},
        "top": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "lowercase": {"type": "boolean", "title": "Lowercase first"},
        "stopwords": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "options": {
            "type": "object",
            "required": ["min_length"],
            "minProperties": 2,
            "properties": {
                "min_length": {"type": "integer", "minimum": 1},
                "separator": {"type": "string", "maxLength": 5, "pattern": "^[^ ]*$"},
            },
        },
    },
}
CONTRACT = input_contract_token(SCHEMA)


def with_input_schema(agent: Agent, schema: Any) -> Agent:
    assert agent.current_binary_id is not None
    AgentBinary.objects.filter(pk=agent.current_binary_id).update(input_schema=schema)
    return agent


@pytest.fixture
def counter(bob) -> Agent:
    """bob's agent whose current version takes a JSON document (SCHEMA)."""
    return with_input_schema(make_agent(bob, slug="counter", name="Counter"), SCHEMA)


def post_fields(client, agent: str = "counter", key: str = KEY, headers=None, **fields: Any):
    data = {
        "agent": agent,
        "budget": "0.25",
        "idempotency_key": key,
        "input_contract": CONTRACT,
        "input/text": "one two three",
        "input/mode": '"words"',
        "input/top": "10",
        **fields,
    }
    data = {name: value for name, value in data.items() if value is not None}
    return client.post(NEW, data, **(headers or {}))


def field_errors(body: str, name: str) -> str:
    parts = body.split(f'id="id_{name}_error"')
    assert len(parts) == 2, f"no errors shown for {name}"
    return html.unescape(parts[1].split("</ul>")[0])


def nothing_moved(alice) -> None:
    assert not Task.objects.exists() and not Escrow.objects.exists()
    assert balance(alice) == FUNDS
    assert ledger_audit().ok


def stored(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# --- the form -------------------------------------------------------------------------


def test_an_agent_with_an_input_schema_gets_its_fields_instead_of_the_text_area(as_alice, counter):
    body = page(as_alice.get(NEW, {"agent": "counter"}))

    assert 'name="input"' not in body  # no text area
    assert 'data-testid="input-fields"' in body
    assert f'name="input_contract" value="{CONTRACT}"' in body
    assert '<label for="id_input/text">Text <abbr class="required-mark"' in body
    assert "The text whose words are counted." in body
    assert re.search(r'<option value="&quot;words&quot;" selected>words</option>', body)
    assert re.search(r'name="input/top" value="10"', body)
    assert "A whole number, at least 1, at most 50." in body
    assert re.search(r'<input type="checkbox" name="input/lowercase"[^>]*>\s*Lowercase first', body)
    assert "One item per line." in body
    # The nested object is a fieldset; its field is named by its JSON pointer.
    assert re.search(r'<fieldset class="schema-group" id="id_input/options"', body)
    assert '<label for="id_input/options/min_length">Min length <abbr' in body
    assert "Must match the pattern ^[^ ]*$." in body
    # The quote follows the fields as they change.
    tag = re.search(r'<[^>]+id="id_input/text"[^>]*>', body)
    assert tag is not None and 'hx-trigger="input changed delay:300ms"' in tag.group(0)
    tag = re.search(r'<[^>]+id="id_input/mode"[^>]*>', body)
    assert tag is not None and 'hx-trigger="change"' in tag.group(0)


def test_an_agent_without_one_keeps_the_text_area(as_alice, echo, counter):
    body = page(as_alice.get(NEW, {"agent": "echo"}))

    assert '<label for="id_input">Input' in body
    assert 'name="input_contract" value=""' in body
    assert 'data-testid="input-fields"' not in body


# --- submitting -------------------------------------------------------------------------


def test_a_valid_post_creates_the_task_with_the_json_input(as_alice, funded_alice, counter):
    response = post_fields(
        as_alice,
        **{
            "input/lowercase": "on",
            "input/stopwords": "the\r\na\r\n",
            "input/options/min_length": "3",
            "input/options/separator": ";",
        },
    )

    task = Task.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/tasks/{task.pk}/"
    document = {
        "text": "one two three",
        "mode": "words",
        "top": 10,
        "lowercase": True,
        "stopwords": ["the", "a"],
        "options": {"min_length": 3, "separator": ";"},
    }
    assert task.input == stored(document)
    assert (task.agent, task.budget, task.status) == (counter, 250_000, "queued")
    assert Escrow.objects.get(task=task).status == "funded"
    assert balance(funded_alice) == FUNDS - 250_000
    assert ledger_audit().ok


def test_empty_optional_fields_are_left_out_of_the_input(as_alice, funded_alice, counter):
    post_fields(as_alice)

    # The unticked box is false; the untouched optional object is left out.
    assert Task.objects.get().input == stored(
        {"text": "one two three", "mode": "words", "top": 10, "lowercase": False}
    )
    assert balance(funded_alice) == FUNDS - 250_000


@pytest.mark.parametrize(
    ("fields", "name", "message"),
    [
        ({"input/top": "ten"}, "input/top", "Enter a whole number."),
        ({"input/top": "51"}, "input/top", "Enter a number at most 50."),
        ({"input/mode": '"chars"'}, "input/mode", "Select a valid choice."),
        ({"input/options/min_length": "1.5"}, "input/options/min_length", "Enter a whole number."),
        ({"input/options/separator": ";"}, "input/options/min_length", "This field is required."),
        ({"input/stopwords": "a\nb\nc\nd\ne\nf"}, "input/stopwords", "At most 5 item(s)."),
        (
            {"input/options/min_length": "2", "input/options/separator": "toolong"},
            "input/options/separator",
            "at most 5 characters",
        ),
    ],
)
def test_a_wrong_value_shows_its_error_next_to_its_field_and_holds_nothing(
    as_alice, funded_alice, counter, fields, name, message
):
    response = post_fields(as_alice, **fields)

    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), name)
    nothing_moved(funded_alice)


def test_the_contract_checks_error_is_shown_at_the_field_its_pointer_names(
    as_alice, funded_alice, counter
):
    # The form does not check patterns; the contract check on submission does.
    response = post_fields(
        as_alice, **{"input/options/min_length": "2", "input/options/separator": "a b"}
    )

    body = response.content.decode()
    assert response.status_code == 200
    # Next to its field, without the "input fails the schema at …" the API says.
    assert '<li>"a b" does not match "^[^ ]*$"</li>' in field_errors(
        body, "input/options/separator"
    )
    nothing_moved(funded_alice)


def test_an_error_about_a_whole_object_is_shown_on_its_fieldset(as_alice, funded_alice, counter):
    # minProperties is not drawn: the object with one property fails at /options.
    response = post_fields(as_alice, **{"input/options/min_length": "2"})

    body = response.content.decode()
    assert re.search(r'<fieldset class="schema-group has-error" id="id_input/options"', body)
    assert "less than 2 properties" in field_errors(body, "input/options")
    nothing_moved(funded_alice)


def test_an_input_over_the_limit_is_refused_above_the_form(
    as_alice, funded_alice, counter, settings
):
    settings.TASK_MAX_INPUT_BYTES = 30

    body = post_fields(as_alice, **{"input/text": "x" * 40}).content.decode()

    assert "the limit is 30" in body
    nothing_moved(funded_alice)


def test_a_double_submission_of_the_fields_creates_one_task(as_alice, funded_alice, counter):
    first = post_fields(as_alice)
    again = post_fields(as_alice)

    assert first["Location"] == again["Location"] == f"/tasks/{Task.objects.get().pk}/"
    assert balance(funded_alice) == FUNDS - 250_000


def test_an_htmx_post_gets_its_errors_in_place_and_a_valid_one_a_redirect(
    as_alice, funded_alice, counter
):
    failed = post_fields(as_alice, headers=HTMX, **{"input/top": "0"})
    body = fragment(failed)
    assert body.lstrip().startswith('<form id="task-form"')
    assert "Enter a number at least 1." in field_errors(body, "input/top")
    nothing_moved(funded_alice)

    done = post_fields(as_alice, headers=HTMX)
    assert done["HX-Redirect"] == f"/tasks/{Task.objects.get().pk}/"


# --- choosing another agent ---------------------------------------------------------------


def test_without_javascript_another_agent_brings_its_fields_and_runs_nothing(
    as_alice, funded_alice, echo, counter
):
    # The form was drawn for echo (a text area); counter was chosen before submitting.
    response = as_alice.post(
        NEW,
        {
            "agent": "counter",
            "input": '{"text": "carried over", "top": 7}',
            "budget": "0.5",
            "idempotency_key": KEY,
            "input_contract": "",
        },
    )

    body = page(response)
    assert "These are the input fields Counter asks for" in body
    assert 'data-testid="input-fields"' in body
    assert f'name="input_contract" value="{CONTRACT}"' in body
    # What was typed stays: the budget, the key, and the JSON, in the new fields.
    assert 'name="budget" value="0.5"' in body and KEY in body
    assert re.search(r'name="input/top" value="7"', body)
    assert "carried over</textarea>" in body
    assert "errorlist" not in body and 'class="errors"' not in body
    nothing_moved(funded_alice)

    # Back to echo: the text area again.
    response = post_fields(as_alice, agent="echo")
    body = page(response)
    assert "Echo takes its input as text" in body and 'id="id_input"' in body
    nothing_moved(funded_alice)


def test_the_show_fields_button_draws_the_chosen_agents_fields(as_alice, funded_alice, counter):
    body = page(as_alice.get(NEW))
    assert 'name="show_input"' in body and "<noscript>" in body

    response = as_alice.post(
        NEW,
        {"agent": "counter", "budget": "", "idempotency_key": KEY, "show_input": "1"},
    )
    body = page(response)
    assert 'data-testid="input-fields"' in body and 'class="errors"' not in body
    nothing_moved(funded_alice)


def test_a_contract_changed_since_the_form_was_drawn_draws_the_new_fields(
    as_alice, funded_alice, counter
):
    newer = {"type": "object", "properties": {"n": {"type": "integer"}}}
    binary = AgentBinaryFactory.create(agent=counter, version=2, input_schema=newer)
    Agent.objects.filter(pk=counter.pk).update(current_binary=binary)

    body = page(post_fields(as_alice))

    assert "These are the input fields Counter asks for" in body
    assert 'name="input/n"' in body and 'name="input/text"' not in body
    nothing_moved(funded_alice)


def test_htmx_fetches_the_fields_of_the_agent_chosen(as_alice, echo, counter):
    target = {"HTTP_HX_TARGET": "task-input", **HTMX}

    body = fragment(as_alice.get(NEW, {"agent": "counter", "input_contract": ""}, **target))
    assert body.lstrip().startswith('<div id="task-input"')
    assert 'data-testid="input-fields"' in body and "<form" not in body
    # It asks for a new quote, measured on the new fields.
    assert 'hx-trigger="load"' in body and 'hx-target="#task-quote"' in body

    back = fragment(as_alice.get(NEW, {"agent": "echo", "input_contract": CONTRACT}, **target))
    assert 'id="id_input"' in back

    # The same fields as on the page: nothing to swap, nothing typed is lost.
    same = as_alice.get(NEW, {"agent": "counter", "input_contract": CONTRACT}, **target)
    assert same.status_code == 204
    other_text_agent = make_agent(counter.owner, slug="upper", name="Upper")
    same = as_alice.get(NEW, {"agent": other_text_agent.slug, "input_contract": ""}, **target)
    assert same.status_code == 204


def test_the_page_quotes_the_size_of_the_document_the_fields_hold(as_alice, counter):
    body = page(as_alice.get(NEW, {"agent": "counter"}))

    # The size of the document the fields hold as drawn (their defaults).
    document = {"text": "", "mode": "words", "top": 10, "lowercase": False}
    assert f"Quote</strong> for {len(stored(document))} bytes of input" in body
    # While someone types, the browser adds up the fields' keys and values.
    assert 'data-skeleton-bytes="15"' in body  # {} and "options":{},
    text = re.search(r'<textarea name="input/text"[^>]*>', body)
    assert text is not None and 'data-json-bytes="10"' in text.group(0)  # "text":"",


def test_a_reused_form_with_other_values_comes_back_with_the_same_fields(
    as_alice, funded_alice, counter
):
    post_fields(as_alice)

    body = post_fields(as_alice, **{"input/top": "11"}).content.decode()

    assert "already submitted with other values" in body
    assert 'data-testid="input-fields"' in body and re.search(r'name="input/top" value="11"', body)
    assert Task.objects.count() == 1
    assert balance(funded_alice) == FUNDS - 250_000


def test_the_sample_agent_with_a_contract_gets_its_form(as_alice, funded_alice, bob):
    contract = json.loads((ROOT / "agents" / "contracts" / "wordstats.json").read_text())
    with_input_schema(make_agent(bob, slug="wordstats"), contract["input_schema"])

    body = page(as_alice.get(NEW, {"agent": "wordstats"}))
    names = re.findall(r'name="(input/[^"]+)"', body)
    assert names == ["input/text", "input/ignore_case", "input/min_length", "input/top"]
    assert re.search(r'name="input/top" value="5"', body)

    token = input_contract_token(contract["input_schema"])
    fields = {"input/text": "", "input/min_length": "1", "input/top": "5"}
    data = {"agent": "wordstats", "budget": "0.25", "idempotency_key": KEY, **fields}
    body = as_alice.post(NEW, {**data, "input_contract": token}).content.decode()
    assert "This field is required." in field_errors(body, "input/text")  # minLength 1
    nothing_moved(funded_alice)

    as_alice.post(NEW, {**data, "input_contract": token, "input/text": "a b a"})
    assert Task.objects.get().input == stored(
        {"text": "a b a", "ignore_case": False, "min_length": 1, "top": 5}
    )
