"""One error envelope for every failure, and no input that makes the server fail."""

from __future__ import annotations

import pytest
from django.db import IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escrow.models import Transfer
from marketplace.models import Agent, Task

from .conftest import error

pytestmark = pytest.mark.django_db


def test_an_unknown_path_under_the_api_is_a_json_404(as_alice, anon):
    assert error(anon.get("/api/v1/nothing/here/")) == (404, "not_found")
    assert error(as_alice.post("/api/v1/nothing/", {})) == (404, "not_found")


def test_a_missing_trailing_slash_gets_a_hint_not_a_redirect(as_alice):
    response = as_alice.post("/api/v1/tasks", {"agent": "x"})

    assert error(response) == (404, "not_found")
    assert "/api/v1/tasks/" in response.json()["error"]["message"]


def test_a_method_an_endpoint_does_not_take_is_405(as_alice):
    response = as_alice.delete("/api/v1/wallet/")

    assert error(response) == (405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "OPTIONS"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/json"),
        (b'{"amount": NaN}', "application/json"),
        (b'{"amount": Infinity}', "application/json"),
        (b"[" * 100_000, "application/json"),
        (b'{"amount": 1, "x": "a\\u0000b"}', "application/json"),
        (b'{"amount": 1, "\\ud800": 1}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"amount": 1}', "application/json; charset=bz2_codec"),
        (b"1" * 5000, "application/json"),
    ],
)
def test_malformed_json_is_a_parse_error(as_alice, body, content_type):
    response = as_alice.generic("POST", "/api/v1/wallet/deposits/", body, content_type)

    assert error(response) == (400, "parse_error")
    assert Transfer.objects.count() == 0


def test_other_content_types_are_415(as_alice):
    response = as_alice.generic("POST", "/api/v1/wallet/deposits/", b"amount=5", "text/plain")

    assert error(response) == (415, "unsupported_media_type")


def test_a_body_over_the_request_limit_is_413(as_alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000

    response = as_alice.post("/api/v1/tasks/", {"agent": "x", "input": "a" * 2_000, "budget": 1})

    assert error(response) == (413, "request_too_large")


def test_validation_errors_name_the_fields(as_alice):
    response = as_alice.post("/api/v1/agents/", {"slug": "ok", "base_fee": "x"})

    assert error(response) == (400, "validation_error")
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"name", "base_fee", "fuel_price"}
    assert fields["name"] == ["This field is required."]
    assert response.json()["error"]["message"] == "name: This field is required."


def test_a_body_that_is_not_an_object_is_a_validation_error(as_alice):
    response = as_alice.post("/api/v1/wallet/deposits/", [1, 2])

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["non_field_errors"]


def test_a_lost_race_for_a_unique_name_is_a_409_conflict(as_alice, monkeypatch):
    def lose_the_race(**kwargs):
        raise IntegrityError("UNIQUE constraint failed: marketplace_agent.slug")

    monkeypatch.setattr("marketplace.api.agents.agent_create", lose_the_race)

    response = as_alice.post(
        "/api/v1/agents/", {"slug": "x", "name": "X", "base_fee": 1, "fuel_price": 1}
    )

    assert error(response) == (409, "conflict")


def test_a_bug_is_answered_with_the_envelope_and_logged(as_alice, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr("marketplace.api.agents.agent_create", broken)

    response = as_alice.post(
        "/api/v1/agents/", {"slug": "x", "name": "X", "base_fee": 1, "fuel_price": 1}
    )

    assert error(response) == (500, "internal_error")
    assert "bug" not in response.json()["error"]["message"]
    assert any(record.exc_info for record in caplog.records)


def test_the_docs_page_answers_errors_in_json_too(anon):
    assert anon.get("/api/v1/docs/").status_code == 200
    assert error(anon.post("/api/v1/docs/", {})) == (405, "method_not_allowed")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "amount",
    "agent",
    "input",
    "budget",
    "fuel_limit",
    "memory_limit_mb",
    "timeout_ms",
    "min_reputation",
    "output_schema",
    "payment",
    "slug",
    "name",
    "tags",
    "base_fee",
    "fuel_price",
    "payload",
    "signature",
    "key_id",
    "username",
    "password",
]
bodies = json_values | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
ENDPOINTS = [
    ("post", "/api/v1/wallet/deposits/"),
    ("post", "/api/v1/tasks/"),
    ("post", "/api/v1/agents/"),
    ("patch", "/api/v1/agents/echo/"),
    ("post", "/api/v1/receipts/verify/"),
    ("post", "/api/v1/auth/token/"),
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, key=st.none() | st.text(max_size=5))
def test_no_body_makes_the_server_fail(as_bob, echo, endpoint, body, key):
    method, path = endpoint
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key.encode().decode("latin-1")}

    response = getattr(as_bob, method)(path, body, format="json", **headers)

    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        error(response)
    assert Task.objects.filter(status="running").count() == 0
    assert Agent.objects.filter(slug="echo").exists()
