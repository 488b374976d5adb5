"""The agent catalogue, agent pages, binary uploads and reputation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketplace.models import Agent, AgentBinary
from reputation.models import AgentReputation, ReputationEvent
from reputation.policies import Outcome
from reputation.services import reputation_apply

from .conftest import MINIMAL_WASM, error, make_agent

AGENTS = "/api/v1/agents/"

pytestmark = pytest.mark.django_db

NEW_AGENT = {
    "slug": "wordcount",
    "name": "Word count",
    "description": "Counts words.",
    "tags": ["text", "json"],
    "base_fee": 500,
    "fuel_price": 1_000,
}


def fields_of(agent: Agent) -> tuple:
    agent.refresh_from_db()
    return (agent.name, agent.description, agent.tags, agent.base_fee, agent.fuel_price)


# --- catalogue -------------------------------------------------------------------------


def test_the_catalogue_lists_everyones_agents_with_price_and_reputation(as_alice, bob, echo):
    response = as_alice.get(AGENTS)

    assert response.status_code == 200
    assert response.json() == {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "slug": "echo",
                "name": "Echo",
                "description": "",
                "tags": [],
                "owner": "bob",
                "base_fee": 1_000,
                "fuel_price": 2_000,
                "status": "active",
                "reputation": "50.0000",
                "requesters": 0,
                "current_binary": {
                    "version": echo.current_binary.version,
                    "sha256": echo.current_binary.sha256,
                    "size": 8,
                },
                "contract": {
                    "version": echo.current_binary.version,
                    "input_schema": None,
                    "output_schema": None,
                },
                "output_schema": None,
                "recommended_fuel": 1_000_000_000,
                "recommended_memory_mb": 64,
                "recommended_timeout_ms": 10_000,
                "accepted_evaluators": [],
                "created_at": response.json()["results"][0]["created_at"],
            }
        ],
    }


@pytest.fixture
def catalogue(bob, charlie):
    cheap = make_agent(bob, slug="cheap", base_fee=10, tags=["text", "fast"])
    pricey = make_agent(bob, slug="pricey", base_fee=9_000, tags=["text-2"])
    trusted = make_agent(charlie, slug="trusted", base_fee=500, tags=["fast"])
    for _ in range(2):  # 50 → 52.5 → 55
        reputation_apply(agent_id=trusted.pk, task_id=None, outcome=Outcome("success"))
    reputation_apply(agent_id=cheap.pk, task_id=None, outcome=Outcome("failure"))  # → 45
    Agent.objects.filter(pk=pricey.pk).update(status="suspended")
    return cheap, pricey, trusted


def slugs(response) -> list[str]:
    assert response.status_code == 200
    return [agent["slug"] for agent in response.json()["results"]]


def test_the_catalogue_filters_by_whole_tag_and_status(as_alice, catalogue):
    assert slugs(as_alice.get(AGENTS, {"tag": "text"})) == ["cheap"]
    assert slugs(as_alice.get(AGENTS, {"tag": "fast"})) == ["cheap", "trusted"]
    assert slugs(as_alice.get(AGENTS, {"tag": "tex"})) == []
    assert slugs(as_alice.get(AGENTS, {"status": "suspended"})) == ["pricey"]


def test_the_catalogue_orders_by_reputation_or_price(as_alice, catalogue):
    assert slugs(as_alice.get(AGENTS)) == ["cheap", "pricey", "trusted"]
    assert slugs(as_alice.get(AGENTS, {"ordering": "-reputation"})) == [
        "trusted",
        "pricey",
        "cheap",
    ]
    assert slugs(as_alice.get(AGENTS, {"ordering": "base_fee"})) == ["cheap", "trusted", "pricey"]
    assert slugs(as_alice.get(AGENTS, {"ordering": "-base_fee"})) == [
        "pricey",
        "trusted",
        "cheap",
    ]


@pytest.mark.parametrize(
    "query",
    [{"ordering": "owner"}, {"tag": "UPPER"}, {"tag": "a|b"}, {"status": "x"}, {"page_size": "0"}],
)
def test_catalogue_queries_are_validated(as_alice, query):
    assert error(as_alice.get(AGENTS, query)) == (400, "validation_error")


# --- create ---------------------------------------------------------------------------


def test_creating_an_agent_makes_the_caller_its_owner(as_alice, alice):
    response = as_alice.post(AGENTS, NEW_AGENT)

    assert response.status_code == 201
    agent = Agent.objects.get(slug="wordcount")
    assert (agent.owner, agent.tags, agent.base_fee, agent.fuel_price) == (
        alice,
        "text json",
        500,
        1_000,
    )
    body = response.json()
    assert (body["owner"], body["tags"], body["reputation"], body["current_binary"]) == (
        "alice",
        ["text", "json"],
        "50.0000",
        None,
    )
    assert AgentReputation.objects.get(agent=agent).score == Decimal("50")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "echo"}, "slug"),
        ({"slug": "Has-Caps"}, "slug"),
        ({"slug": "a/b"}, "slug"),
        ({"name": ""}, "name"),
        ({"tags": ["Bad Tag"]}, "tags"),
        ({"tags": "text"}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"base_fee": -1}, "base_fee"),
        ({"base_fee": "10"}, "base_fee"),
        ({"fuel_price": 10**16}, "fuel_price"),
        ({"output_schema": {"type": "nonsense"}}, "output_schema"),
        ({"output_schema": []}, "output_schema"),
    ],
)
def test_creating_an_agent_validates_every_field(as_alice, echo, change, field):
    response = as_alice.post(AGENTS, {**NEW_AGENT, **change})

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == [field]
    assert Agent.objects.count() == 1


# --- detail and update -----------------------------------------------------------------


def test_anyone_signed_in_can_read_an_agent(as_charlie, echo):
    response = as_charlie.get(f"{AGENTS}echo/")

    assert response.status_code == 200
    assert (response.json()["slug"], response.json()["owner"]) == ("echo", "bob")


def test_an_unknown_agent_is_404(as_alice):
    assert error(as_alice.get(f"{AGENTS}nope/")) == (404, "agent_not_found")
    assert error(as_alice.patch(f"{AGENTS}nope/", {"name": "x"})) == (404, "agent_not_found")


def test_the_owner_updates_the_listing_and_prices(as_bob, echo):
    response = as_bob.patch(
        f"{AGENTS}echo/", {"name": "Echo 2", "tags": ["demo"], "base_fee": 5, "fuel_price": 0}
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["tags"]) == ("Echo 2", ["demo"])
    assert fields_of(echo) == ("Echo 2", "", "demo", 5, 0)


def test_an_update_cannot_rename_the_slug_or_take_bad_values(as_bob, echo):
    assert as_bob.patch(f"{AGENTS}echo/", {"slug": "other"}).status_code == 200
    response = as_bob.patch(f"{AGENTS}echo/", {"base_fee": -5, "name": "x"})

    assert error(response) == (400, "validation_error")
    assert Agent.objects.filter(slug="echo").exists()
    assert fields_of(echo) == ("Echo", "", "", 1_000, 2_000)


def test_only_the_owner_updates_an_agent(as_charlie, echo):
    response = as_charlie.patch(f"{AGENTS}echo/", {"name": "mine now"})

    assert error(response) == (403, "not_agent_owner")
    assert fields_of(echo) == ("Echo", "", "", 1_000, 2_000)


# --- binaries ---------------------------------------------------------------------------


def upload(client, slug: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        f"{AGENTS}{slug}/binaries/",
        {"wasm": SimpleUploadedFile("agent.wasm", data)},
        format="multipart",
    )


def test_the_owner_uploads_a_binary_which_becomes_current(as_bob, bob):
    agent = make_agent(bob, slug="fresh", with_binary=False)

    response = upload(as_bob, "fresh", MINIMAL_WASM)

    assert response.status_code == 201
    binary = AgentBinary.objects.get(agent=agent)
    assert response.json() == {"version": 1, "sha256": binary.sha256, "size": len(MINIMAL_WASM)}
    agent.refresh_from_db()
    assert agent.current_binary == binary
    again = upload(as_bob, "fresh", MINIMAL_WASM)
    assert (again.status_code, again.json()) == (200, response.json())
    assert AgentBinary.objects.filter(agent=agent).count() == 1


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"not wasm at all", 400, "wasm_not_wasm"),
        (b"\0asm\x01\0\0\0\xff", 400, "wasm_compile_failed"),
        (b"", 400, "wasm_not_wasm"),
    ],
)
def test_an_invalid_binary_is_refused_with_its_reason(as_bob, bob, data, status, code):
    agent = make_agent(bob, slug="fresh", with_binary=False)

    assert error(upload(as_bob, "fresh", data)) == (status, code)
    assert AgentBinary.objects.filter(agent=agent).count() == 0


def test_a_binary_over_the_limit_is_413(as_bob, bob, settings):
    settings.WASM_MAX_UPLOAD_BYTES = len(MINIMAL_WASM) - 1
    make_agent(bob, slug="fresh", with_binary=False)

    response = upload(as_bob, "fresh", MINIMAL_WASM)

    assert error(response) == (413, "wasm_too_large")
    assert response.json()["error"]["fields"] == {
        "size": len(MINIMAL_WASM),
        "limit": len(MINIMAL_WASM) - 1,
    }
    assert AgentBinary.objects.count() == 0


def test_a_request_far_over_the_limit_is_refused_before_it_is_read(as_bob, bob, settings):
    settings.WASM_MAX_UPLOAD_BYTES = 1_000
    make_agent(bob, slug="fresh", with_binary=False)

    assert error(upload(as_bob, "fresh", b"\0asm" + b"\0" * 100_000)) == (413, "wasm_too_large")


def test_an_upload_needs_the_wasm_file_as_multipart(as_bob, bob):
    make_agent(bob, slug="fresh", with_binary=False)

    assert error(as_bob.post(f"{AGENTS}fresh/binaries/", {"wasm": "AGFzbQ=="})) == (
        415,
        "unsupported_media_type",
    )
    response = as_bob.post(f"{AGENTS}fresh/binaries/", {"other": "x"}, format="multipart")
    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["wasm"]


def test_only_the_owner_uploads_binaries(as_charlie, echo):
    before = echo.current_binary_id

    assert error(upload(as_charlie, "echo", MINIMAL_WASM)) == (403, "not_agent_owner")
    assert error(upload(as_charlie, "nope", MINIMAL_WASM)) == (404, "agent_not_found")
    echo.refresh_from_db()
    assert echo.current_binary_id == before
    assert AgentBinary.objects.count() == 1


# --- reputation ---------------------------------------------------------------------------


def test_the_reputation_page_shows_the_score_and_latest_events(as_charlie, echo):
    reputation_apply(agent_id=echo.pk, task_id=None, outcome=Outcome("failure", reason="trap"))
    reputation_apply(agent_id=echo.pk, task_id=None, outcome=Outcome("neutral"))

    response = as_charlie.get(f"{AGENTS}echo/reputation/")

    assert response.status_code == 200
    body = response.json()
    assert (body["score"], body["successes"], body["failures"], body["neutral"]) == (
        "45.0000",
        0,
        1,
        1,
    )
    assert [(e["outcome"], e["delta"], e["score_after"]) for e in body["events"]] == [
        ("neutral", "0.0000", "45.0000"),
        ("failure", "-5.0000", "45.0000"),
    ]
    assert ReputationEvent.objects.count() == 2
    assert error(as_charlie.get(f"{AGENTS}nope/reputation/")) == (404, "agent_not_found")


def test_a_slug_that_names_a_page_is_refused(as_bob):
    body = {"slug": "new", "name": "New", "base_fee": 1, "fuel_price": 1}
    response = as_bob.post("/api/v1/agents/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "slug" in response.json()["error"]["fields"]
    assert not Agent.objects.filter(slug="new").exists()
