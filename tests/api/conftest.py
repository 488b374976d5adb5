from __future__ import annotations

from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from marketplace.models import Agent
from tests.factories import MINIMAL_WASM, balance, make_agent  # noqa: F401 (used by tests)


def client_for(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def as_alice(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def as_bob(bob) -> APIClient:
    return client_for(bob)


@pytest.fixture
def as_charlie(charlie) -> APIClient:
    return client_for(charlie)


@pytest.fixture
def echo(bob) -> Agent:
    """bob's agent, with a binary, ready to take tasks."""
    return make_agent(bob)


def error(response) -> tuple[int, str]:
    """(status, error code) of an error response, checking the envelope on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return response.status_code, body["error"]["code"]
