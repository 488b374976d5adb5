"""The upload page shares the API's per-user upload rate, and says when to come back."""

from __future__ import annotations

import pytest

from marketplace.models import AgentBinary
from tests.views.conftest import MINIMAL_WASM, make_agent
from tests.views.test_agents import field_errors, upload_url, wasm_file

pytestmark = pytest.mark.django_db


def test_uploads_past_the_rate_are_refused_with_when_to_come_back(as_bob, bob, settings):
    settings.API_UPLOAD_THROTTLE_RATE = "2/hour"
    make_agent(bob, slug="fresh", with_binary=False)
    for data in (b"nope", MINIMAL_WASM):
        as_bob.post(upload_url("fresh"), {"wasm": wasm_file(data)})

    response = as_bob.post(upload_url("fresh"), {"wasm": wasm_file(MINIMAL_WASM)})

    assert response.status_code == 200
    assert (
        "You have uploaded as many binaries as allowed for now (2/hour); try again in 60 minutes."
    ) in field_errors(response.content.decode(), "wasm")
    assert AgentBinary.objects.count() == 1


def test_the_page_and_the_api_count_against_the_same_rate(as_bob, bob, settings):
    from rest_framework.test import APIClient

    settings.API_UPLOAD_THROTTLE_RATE = "1/hour"
    make_agent(bob, slug="fresh", with_binary=False)
    as_bob.post(upload_url("fresh"), {"wasm": wasm_file(MINIMAL_WASM)})
    api = APIClient()
    api.force_authenticate(bob)

    response = api.post(
        "/api/v1/agents/fresh/binaries/", {"wasm": wasm_file(MINIMAL_WASM)}, format="multipart"
    )

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
