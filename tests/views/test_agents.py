"""The agent catalogue, agent pages, listing an agent and uploading its binary."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from execution.services import Execution
from marketplace.models import Agent, AgentBinary
from marketplace.services import agent_suspend
from reputation.policies import Outcome
from reputation.services import reputation_apply
from tests.factories import MINIMAL_WASM, make_agent
from tests.views.conftest import HTMX, earned_by_owner, fragment, page, settle, submit

LIST = reverse("agent-list")
NEW = reverse("agent-new")

pytestmark = pytest.mark.django_db


def upload_url(slug: str) -> str:
    return reverse("agent-binary-new", args=[slug])


def field_errors(body: str, field: str) -> str:
    parts = body.split(f'id="id_{field}_error"')
    assert len(parts) == 2, f"no errors shown for {field}"
    return html.unescape(parts[1].split("</ul>")[0])


def wasm_file(data: bytes, name: str = "agent.wasm"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/wasm")


@pytest.fixture
def catalogue(bob, charlie):
    cheap = make_agent(bob, slug="cheap", name="Cheap", base_fee=100, tags=["text"])
    pricey = make_agent(charlie, slug="pricey", name="Pricey", base_fee=9_000, tags=["math"])
    for _ in range(2):
        reputation_apply(agent_id=cheap.pk, task_id=None, outcome=Outcome("failure"))
        reputation_apply(agent_id=pricey.pk, task_id=None, outcome=Outcome("success"))
    return cheap, pricey


# --- the catalogue ----------------------------------------------------------------------


def test_the_catalogue_sorts_by_reputation_by_default_and_by_price(as_alice, catalogue):
    best_first = page(as_alice.get(LIST))
    assert best_first.index("Pricey") < best_first.index("Cheap")
    assert "55.0" in best_first and "40.0" in best_first and "0.009000 CR" in best_first

    cheapest_first = as_alice.get(LIST, {"ordering": "base_fee"}).content.decode()
    assert cheapest_first.index("Cheap") < cheapest_first.index("Pricey")
    dearest_first = as_alice.get(LIST, {"ordering": "-base_fee"}).content.decode()
    assert dearest_first.index("Pricey") < dearest_first.index("Cheap")
    worst_ignored = as_alice.get(LIST, {"ordering": "nonsense"})
    assert worst_ignored.status_code == 200


def test_the_catalogue_searches_names_tags_and_owners(as_alice, catalogue):
    by_tag = as_alice.get(LIST, {"q": "math"}).content.decode()
    assert "Pricey" in by_tag and "Cheap" not in by_tag
    by_owner = as_alice.get(LIST, {"q": "bob"}).content.decode()
    assert "Cheap" in by_owner and "Pricey" not in by_owner
    nothing = as_alice.get(LIST, {"q": "zzz"}).content.decode()
    assert "No agents match" in nothing and "Clear search" in nothing


def test_only_mine_shows_the_users_own_agents(as_bob, catalogue):
    body = as_bob.get(LIST, {"mine": "on"}).content.decode()

    assert "Cheap" in body and "Pricey" not in body


def test_an_htmx_search_gets_just_the_results(as_alice, catalogue):
    body = fragment(as_alice.get(LIST, {"q": "cheap"}, **HTMX))

    assert body.lstrip().startswith('<div id="agent-results">')
    assert "Cheap" in body and "Pricey" not in body


def test_an_empty_catalogue_invites_to_publish(as_alice):
    body = as_alice.get(LIST).content.decode()

    assert "No agents yet" in body and reverse("agent-new") in body


def test_suspended_agents_and_agents_without_a_binary_cannot_be_run(as_alice, bob):
    agent_suspend(agent=make_agent(bob, slug="paused", name="Paused"))
    make_agent(bob, slug="unbuilt", name="Unbuilt", with_binary=False)

    body = as_alice.get(LIST).content.decode()

    assert "badge-suspended" in body and "no binary" in body
    assert "?agent=paused" not in body and "?agent=unbuilt" not in body


# --- the agent page -----------------------------------------------------------------------


def test_the_agent_page_shows_price_reputation_chart_and_success_rate(
    as_charlie, funded_alice, echo
):
    settle(submit(funded_alice, echo))
    settle(submit(funded_alice, echo), Execution(reason="trap", elapsed_ms=1))
    settle(submit(funded_alice, echo), Execution(reason="platform_error"))

    body = page(as_charlie.get(reverse("agent-detail", args=["echo"])))

    assert "Returns its input." in body
    assert "0.001000 CR" in body and "0.002000 CR per million fuel" in body
    assert "<svg" in body and "<polyline" in body
    assert body.count('class="dot dot-') == 4  # the start and three events
    assert "dot-failure" in body and "dot-neutral" in body
    assert "50 %" in body and "1 of 2 scored runs" in body
    assert "Reputation over time" in body
    # Strangers see the agent's runs but nobody's task pages and no earnings.
    assert "Yours →" not in body
    assert "Your earnings" not in body and "Binaries" not in body


def test_the_owner_sees_earnings_and_binaries(as_bob, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    body = as_bob.get(reverse("agent-detail", args=["echo"])).content.decode()

    earned = earned_by_owner(task)
    assert f'data-testid="earnings">0.{earned:06d} CR<' in body
    assert "Binaries" in body and "current" in body
    assert "Upload binary" in body


def test_the_requester_finds_their_own_runs_on_the_agent_page(as_alice, funded_alice, echo):
    task = settle(submit(funded_alice, echo))

    body = as_alice.get(reverse("agent-detail", args=["echo"])).content.decode()

    assert reverse("task-detail", args=[task.pk]) in body


def test_an_agent_without_history_has_empty_states(as_alice, echo):
    body = as_alice.get(reverse("agent-detail", args=["echo"])).content.decode()

    assert "No reputation history yet" in body
    assert "No tasks yet" in body
    assert "no runs yet" in body


def test_an_unknown_agent_is_not_found(as_alice):
    response = as_alice.get(reverse("agent-detail", args=["nope"]))

    assert response.status_code == 404
    assert "Not found" in response.content.decode()


# --- listing an agent ---------------------------------------------------------------------


def agent_form(**overrides):
    return {
        "name": "Word count",
        "slug": "wordcount",
        "description": "Counts words.",
        "tags": "text, JSON",
        "base_fee": "0.002",
        "fuel_price": "0.0015",
        **overrides,
    }


def test_listing_an_agent_converts_prices_and_leads_to_the_upload(as_alice, alice):
    response = as_alice.post(NEW, agent_form())

    agent = Agent.objects.get(slug="wordcount")
    assert response["Location"] == upload_url("wordcount")
    assert (agent.owner, agent.name, agent.tags) == (alice, "Word count", "text json")
    assert (agent.base_fee, agent.fuel_price) == (2_000, 1_500)
    assert agent.reputation.score == 50
    assert "Upload its WebAssembly binary" in as_alice.get(response["Location"]).content.decode()


def test_free_agents_are_allowed(as_alice):
    as_alice.post(NEW, agent_form(base_fee="0", fuel_price="0"))

    assert Agent.objects.get().base_fee == 0


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"slug": "echo"}, "slug", "An agent with this slug already exists."),
        ({"slug": "Bad Slug"}, "slug", "Lowercase letters, digits, hyphens"),
        ({"slug": "new"}, "slug", "reserved"),
        ({"name": ""}, "name", "This field is required."),
        ({"tags": "ok No_Caps"}, "tags", "is not a tag"),
        ({"base_fee": "-1"}, "base_fee", "Enter a positive amount."),
        ({"base_fee": "0.0000001"}, "base_fee", "At most 6 decimal places"),
        ({"fuel_price": "lots"}, "fuel_price", "Enter an amount in credits"),
    ],
)
def test_listing_errors_appear_next_to_their_field(as_alice, echo, overrides, field, message):
    response = as_alice.post(NEW, agent_form(**overrides))

    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), field)
    assert Agent.objects.count() == 1


def test_an_htmx_listing_gets_errors_in_place_or_a_client_redirect(as_alice):
    failed = fragment(as_alice.post(NEW, agent_form(name=""), **HTMX))
    assert failed.lstrip().startswith('<form id="agent-form"')

    done = as_alice.post(NEW, agent_form(), **HTMX)
    assert done["HX-Redirect"] == upload_url("wordcount")


# --- uploading a binary -----------------------------------------------------------------------


def test_the_owner_uploads_a_binary_and_it_becomes_current(as_bob, bob):
    agent = make_agent(bob, slug="fresh", with_binary=False)

    response = as_bob.post(upload_url("fresh"), {"wasm": wasm_file(MINIMAL_WASM)})

    assert response["Location"] == reverse("agent-detail", args=["fresh"])
    agent.refresh_from_db()
    assert agent.current_binary is not None and agent.current_binary.version == 1
    body = as_bob.get(response["Location"]).content.decode()
    assert "Version 1 is live" in body

    as_bob.post(upload_url("fresh"), {"wasm": wasm_file(MINIMAL_WASM)})
    assert "That is already version 1." in as_bob.get(response["Location"]).content.decode()
    assert AgentBinary.objects.filter(agent=agent).count() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not wasm at all", "The file is not a WebAssembly binary."),
        (b"\x00asm\x01\x00\x00\x00garbage", "does not compile"),
        (b"\x00asm\x01\x00\x00\x00", "does not export a `_start` function"),
    ],
)
def test_a_bad_binary_is_refused_with_the_reason_next_to_the_field(as_bob, bob, data, message):
    make_agent(bob, slug="fresh", with_binary=False)

    response = as_bob.post(upload_url("fresh"), {"wasm": wasm_file(data)})

    assert response.status_code == 200
    assert message in field_errors(response.content.decode(), "wasm")
    assert not AgentBinary.objects.exists()


def test_a_missing_or_oversized_file_is_refused(as_bob, bob, settings):
    make_agent(bob, slug="fresh", with_binary=False)
    missing = as_bob.post(upload_url("fresh"), {})
    assert "This field is required." in field_errors(missing.content.decode(), "wasm")

    settings.WASM_MAX_UPLOAD_BYTES = 16
    big = as_bob.post(upload_url("fresh"), {"wasm": wasm_file(MINIMAL_WASM)})
    assert "the limit is 16" in field_errors(big.content.decode(), "wasm")
    assert not AgentBinary.objects.exists()


def test_an_htmx_upload_gets_the_error_in_place(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False)

    body = fragment(as_bob.post(upload_url("fresh"), {"wasm": wasm_file(b"nope")}, **HTMX))

    assert body.lstrip().startswith('<form id="binary-form"')
    assert "not a WebAssembly binary" in body


def test_only_the_owner_may_upload(as_charlie, as_alice, echo):
    for client in (as_charlie, as_alice):
        assert client.get(upload_url("echo")).status_code == 404
        response = client.post(upload_url("echo"), {"wasm": wasm_file(MINIMAL_WASM)})
        assert response.status_code == 404
    assert AgentBinary.objects.filter(agent=echo).count() == 1
