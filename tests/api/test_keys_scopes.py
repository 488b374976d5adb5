"""What an API key may reach, for every endpoint of the URLconf and every method it serves.

The cases come from the URLconf itself. An endpoint listed in KEY_SCOPES must declare
exactly those scopes, and is tried with a key holding every scope but the one it needs
(403 `scope_required`, nothing changes) and with a key holding only that one (it gets in:
what alice's token gets, where the authorization matrix says). Every other endpoint —
key management, deposits, and whatever is added later without a thought for keys — must
refuse a key that holds every scope. Public endpoints ignore keys.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from marketplace.api.auth_keys import ANY_KEY, declared_scopes
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create

from .conftest import error
from .test_authorization import (  # noqa: F401 (world is a fixture)
    MATRIX,
    ObjectEndpoint,
    World,
    call,
    state,
    world,
)

ALL = tuple(ApiKey.Scope.values)
PUBLIC = "public"

# The scope a key needs, per endpoint and method. Methods not listed admit no key.
KEY_SCOPES: dict[str, dict[str, str] | str] = {
    "api:agents": {"GET": ANY_KEY, "POST": "agents:write"},
    "api:agent": {"GET": ANY_KEY, "PATCH": "agents:write"},
    "api:agent-binaries": {"POST": "agents:write"},
    "api:agent-reputation": {"GET": ANY_KEY},
    "api:agent-quote": {"GET": ANY_KEY},
    "api:agent-versions": {"GET": ANY_KEY},
    "api:agent-openapi": {"GET": ANY_KEY},
    "api:tasks": {"GET": "tasks:read", "POST": "tasks:write"},
    "api:task-batch": {"POST": "tasks:write"},
    "api:task": {"GET": "tasks:read"},
    "api:task-cancel": {"POST": "tasks:write"},
    "api:task-receipt": {"GET": "tasks:read"},
    "api:channels": {"GET": "channels:write", "POST": "channels:write"},
    "api:channel": {"GET": "channels:write"},
    "api:channel-close": {"POST": "channels:write"},
    # A program paying by channel registers its own voucher signer.
    "api:keys": {"GET": "channels:write", "POST": "channels:write"},
    "api:wallet": {"GET": "wallet:read"},
    "api:transfers": {"GET": "wallet:read"},
    # Never with a key: key management, money in, revoking the account's voucher signers.
    "api:api-keys": {},
    "api:api-key": {},
    "api:deposits": {},
    "api:key": {},
    # No credentials needed; a key changes nothing there.
    "api:register": PUBLIC,
    "api:token": PUBLIC,
    "api:receipt-public-key": PUBLIC,
    "api:receipt-public-keys": PUBLIC,
    "api:receipt-verify": PUBLIC,
    "api:schema": PUBLIC,
    "api:docs": PUBLIC,
    "api:not-found": PUBLIC,
}


def api_patterns() -> dict[str, Any]:
    """name → pattern, for every pattern of the API's URLconf."""
    found = {}
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "api":
            for pattern in entry.url_patterns:
                assert isinstance(pattern, URLPattern), pattern
                found[f"api:{pattern.name}"] = pattern
    return found


PATTERNS = api_patterns()
VIEWS = {name: pattern.callback for name, pattern in PATTERNS.items()}


def served_methods(view: Any) -> list[str]:
    cls = getattr(view, "cls", None)
    if cls is None:
        return []
    return [m for m in cls().allowed_methods if m not in ("HEAD",)]


def key_cases():
    for name, view in sorted(VIEWS.items()):
        if KEY_SCOPES.get(name) == PUBLIC:
            continue
        for method in sorted(served_methods(view)):
            yield pytest.param(name, method, id=f"{name}-{method}")


def expected_scope(name: str, method: str) -> str | None:
    entry = KEY_SCOPES.get(name, {})
    assert isinstance(entry, dict)
    if method == "OPTIONS":
        return ANY_KEY if entry else None
    return entry.get(method)


def bearer_for(user: Any, scopes: tuple[str, ...]) -> APIClient:
    _, raw = api_key_create(user=user, name="probe", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


# Path values for endpoints the authorization matrix does not know yet: a key that is
# refused never gets as far as looking the object up.
MADE_UP = {
    "UUIDConverter": "00000000-0000-4000-8000-000000000000",
    "SlugConverter": "echo",
    "StringConverter": "x",
    "IntConverter": 1,
}


def target(w: World, name: str, method: str) -> tuple[str, Any]:
    endpoint = MATRIX.get(name)
    if isinstance(endpoint, ObjectEndpoint):
        url = reverse(name, kwargs=endpoint.kwargs(w))
        return url, endpoint.bodies.get(method, dict)()
    converters = getattr(PATTERNS[name].pattern, "converters", {})
    kwargs = {param: MADE_UP[type(c).__name__] for param, c in converters.items()}
    return reverse(name, kwargs=kwargs), {}


def test_the_views_declare_exactly_the_scopes_listed_here():
    for name, view in VIEWS.items():
        entry = KEY_SCOPES.get(name, {})
        declared = declared_scopes(getattr(view, "cls", None))
        assert declared == ({} if entry == PUBLIC else entry), name


@pytest.mark.parametrize(("name", "method"), list(key_cases()))
def test_every_endpoint_enforces_its_scope_and_refuses_keys_by_default(db, request, name, method):
    w = request.getfixturevalue("world")
    needed = expected_scope(name, method)
    url, body = target(w, name, method)

    if needed is None:
        # Not for keys, whatever they hold.
        client = bearer_for(w.alice, ALL)
        before = state()
        response = call(client, method, url, body)
        assert error(response) == (403, "scope_required"), response.content
        assert state() == before
        return

    if needed != ANY_KEY:
        client = bearer_for(w.alice, tuple(scope for scope in ALL if scope != needed))
        before = state()
        response = call(client, method, url, body)
        assert error(response) == (403, "scope_required"), response.content
        assert response.json()["error"]["fields"]["required_scope"] == needed
        assert state() == before

    only = (needed,) if needed != ANY_KEY else ("wallet:read",)
    _, body = target(w, name, method)  # an upload is read once: a fresh one
    response = call(bearer_for(w.alice, only), method, url, body)
    assert response.status_code not in (401, 403), response.content
    endpoint = MATRIX.get(name)
    if isinstance(endpoint, ObjectEndpoint):
        # A key with the scope gets what alice's own token gets.
        assert response.status_code == endpoint.owner[method], response.content


@pytest.mark.parametrize(
    "name", sorted(name for name, entry in KEY_SCOPES.items() if entry == PUBLIC)
)
def test_public_endpoints_answer_a_key_as_they_answer_anybody(db, request, name):
    w = request.getfixturevalue("world")
    url = "/api/v1/no-such-endpoint/" if name == "api:not-found" else reverse(name)
    method = "POST" if name in ("api:register", "api:token", "api:receipt-verify") else "GET"
    anonymous = call(APIClient(), method, url)

    response = call(bearer_for(w.alice, ALL), method, url)

    assert response.status_code == anonymous.status_code


def test_a_key_gets_405_not_403_for_a_method_the_endpoint_does_not_serve(db, request):
    w = request.getfixturevalue("world")
    response = bearer_for(w.alice, ALL).put(reverse("api:tasks"), {}, format="json")

    assert response.status_code == 405
