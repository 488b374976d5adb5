from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wasmtime
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from escrow.models import Account
from escrow.services import deposit_create
from marketplace.models import Agent
from tests.factories import AgentBinaryFactory, AgentFactory

# The smallest WASI command the validator accepts: `_start` and `memory`, no imports.
MINIMAL_WASM = bytes(
    wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))')
)


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Throttle counters live in the cache; one test's logins must not throttle the next.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The production hasher is slow on purpose; these tests hash hundreds of passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


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


def balance(user: Any) -> int:
    return Account.objects.get(user=user).balance


def make_agent(owner: Any, *, slug: str = "echo", with_binary: bool = True, **kwargs: Any) -> Agent:
    kwargs.setdefault("base_fee", 1_000)
    kwargs.setdefault("fuel_price", 2_000)
    agent = AgentFactory.create(owner=owner, slug=slug, **kwargs)
    if with_binary:
        binary = AgentBinaryFactory.create(agent=agent)
        Agent.objects.filter(pk=agent.pk).update(current_binary=binary)
        agent.refresh_from_db()
    return agent


@pytest.fixture
def echo(bob) -> Agent:
    """bob's agent, with a binary, ready to take tasks."""
    return make_agent(bob)


@pytest.fixture
def funded_alice(alice):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    return alice


def error(response) -> tuple[int, str]:
    """(status, error code) of an error response, checking the envelope on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return response.status_code, body["error"]["code"]
