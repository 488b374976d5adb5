"""API keys through the API: managing them, authenticating with them, and what they may do.

alice manages her keys with her token (or a session); a key itself never reaches key
management. charlie has no access to alice's keys.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from escrow.services import deposit_create
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from marketplace.models import Task

from .conftest import error

ALL_SCOPES = ["tasks:read", "tasks:write", "channels:write", "wallet:read", "agents:write"]
URL = "/api/v1/api-keys/"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def create(client: APIClient, **body) -> dict:
    body.setdefault("name", "robot")
    body.setdefault("scopes", ["tasks:read", "tasks:write"])
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_creating_a_key_shows_it_once_and_stores_only_its_hash(as_alice, alice, echo):
    body = create(
        as_alice,
        name="nightly",
        limits={"per_task": 50_000, "daily": 1_000_000},
        agents=["echo"],
        expires_at=(timezone.now() + timedelta(days=30)).isoformat(),
    )

    raw = body["key"]
    assert raw.startswith("axk_") and len(raw) == 56
    assert body["prefix"] == raw[:12]
    assert body["scopes"] == ["tasks:read", "tasks:write"]
    assert body["limits"] == {
        "per_task": 50_000,
        "daily": 1_000_000,
        "monthly": None,
        "total": None,
    }
    assert body["agents"] == ["echo"]
    assert body["spent"] == {"daily": 0, "monthly": 0, "total": 0}
    assert body["remaining"] == {"daily": 1_000_000, "monthly": None, "total": None}
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.secret_sha256 == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(ApiKey.objects.filter(pk=body["id"]).values().get())
    # Never again: not in the detail, not in the list.
    detail = as_alice.get(f"{URL}{body['id']}/").json()
    assert "key" not in detail and detail["prefix"] == body["prefix"]
    assert all("key" not in item for item in as_alice.get(URL).json()["results"])


def test_a_key_authenticates_as_its_user(as_alice, alice):
    raw = create(as_alice, scopes=["wallet:read"])["key"]
    deposit_create(user_id=alice.pk, amount=7_000_000)

    response = bearer(raw).get("/api/v1/wallet/")

    assert response.status_code == 200
    assert response.json()["balance"] == 7_000_000
    assert ApiKey.objects.get(prefix=raw[:12]).last_used_at is not None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer axk_unknown0_" + "A" * 43,
        "Bearer nonsense",
        "Bearer",
        "Bearer two words",
    ],
)
def test_an_unknown_or_malformed_key_gets_401(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/tasks/")

    assert error(response) == (401, "authentication_failed")
    assert response["WWW-Authenticate"].startswith("Token")


def test_a_key_with_a_wrong_secret_but_a_real_prefix_gets_401(as_alice):
    raw = create(as_alice)["key"]
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")

    assert error(bearer(forged).get("/api/v1/tasks/")) == (401, "authentication_failed")


def test_a_revoked_key_gets_401_at_once(as_alice):
    created = create(as_alice)
    robot = bearer(created["key"])
    assert robot.get("/api/v1/tasks/").status_code == 200

    assert as_alice.delete(f"{URL}{created['id']}/").status_code == 204

    response = robot.get("/api/v1/tasks/")
    assert error(response) == (401, "authentication_failed")
    assert "revoked" in response.json()["error"]["message"]
    # Revoking again changes nothing; the key stays listed, revoked.
    revoked_at = ApiKey.objects.get(pk=created["id"]).revoked_at
    assert as_alice.delete(f"{URL}{created['id']}/").status_code == 204
    assert ApiKey.objects.get(pk=created["id"]).revoked_at == revoked_at
    assert as_alice.get(f"{URL}{created['id']}/").json()["revoked_at"] is not None


def test_an_expired_key_gets_401(as_alice):
    created = create(as_alice, expires_at=(timezone.now() + timedelta(hours=1)).isoformat())
    ApiKey.objects.filter(pk=created["id"]).update(expires_at=timezone.now())

    response = bearer(created["key"]).get("/api/v1/tasks/")

    assert error(response) == (401, "authentication_failed")
    assert "expired" in response.json()["error"]["message"]


def test_a_key_of_a_deactivated_user_gets_401(as_alice, alice):
    raw = create(as_alice)["key"]
    alice.is_active = False
    alice.save()

    assert error(bearer(raw).get("/api/v1/tasks/")) == (401, "authentication_failed")


def test_a_key_never_reaches_key_management(as_alice):
    created = create(as_alice, scopes=ALL_SCOPES)
    robot = bearer(created["key"])
    before = list(ApiKey.objects.values())

    attempts = [
        robot.get(URL),
        robot.post(URL, {"name": "wider", "scopes": ALL_SCOPES}, format="json"),
        robot.get(f"{URL}{created['id']}/"),
        robot.patch(f"{URL}{created['id']}/", {"limits": {"daily": None}}, format="json"),
        robot.delete(f"{URL}{created['id']}/"),
    ]

    assert [error(response) for response in attempts] == [(403, "scope_required")] * 5
    assert list(ApiKey.objects.values()) == before


def test_a_key_cannot_change_the_account_or_move_money_out(as_alice, alice):
    robot = bearer(create(as_alice, scopes=ALL_SCOPES)["key"])

    assert error(robot.post("/api/v1/wallet/deposits/", {"amount": 1}, format="json")) == (
        403,
        "scope_required",
    )
    assert error(robot.delete("/api/v1/keys/1/")) == (403, "scope_required")


def test_register_and_token_ignore_a_key(as_alice):
    robot = bearer(create(as_alice, scopes=ALL_SCOPES)["key"])

    # They take no credentials at all: a key adds nothing to what anybody may do there.
    assert robot.post("/api/v1/auth/token/", {}, format="json").status_code == 400
    assert robot.post("/api/v1/auth/register/", {}, format="json").status_code == 400


def test_public_endpoints_stay_public_with_a_key(as_alice):
    robot = bearer(create(as_alice, scopes=["tasks:read"])["key"])

    assert robot.get("/api/v1/schema/").status_code == 200
    assert robot.get("/api/v1/receipts/public-key/").status_code == 200


def test_the_schema_marks_which_operations_take_a_key_and_with_which_scope(anon, db):
    document = anon.get("/api/v1/schema/?format=json").json()
    paths = document["paths"]

    assert document["components"]["securitySchemes"]["apiKeyAuth"]["scheme"] == "bearer"
    assert paths["/api/v1/tasks/"]["post"]["x-api-key-scope"] == "tasks:write"
    assert {"apiKeyAuth": []} in paths["/api/v1/tasks/"]["post"]["security"]
    assert paths["/api/v1/agents/"]["get"]["x-api-key-scope"] == "any"
    assert "x-api-key-scope" not in paths["/api/v1/api-keys/"]["post"]
    assert {"apiKeyAuth": []} not in paths["/api/v1/api-keys/"]["post"]["security"]


def test_charlie_cannot_see_or_touch_alices_keys(as_alice, as_charlie):
    created = create(as_alice)
    url = f"{URL}{created['id']}/"

    assert error(as_charlie.get(url)) == (404, "not_found")
    assert error(as_charlie.patch(url, {"name": "mine"}, format="json")) == (404, "not_found")
    assert error(as_charlie.delete(url)) == (404, "not_found")
    assert as_charlie.get(URL).json()["count"] == 0
    assert ApiKey.objects.get(pk=created["id"]).revoked_at is None


def test_a_session_manages_keys_too(client, alice):
    client.force_login(alice)

    response = client.post(
        URL, {"name": "from the browser", "scopes": ["tasks:read"]}, content_type="application/json"
    )

    assert response.status_code == 201
    assert response.json()["key"].startswith("axk_")


def test_patch_merges_limits_and_keeps_what_was_spent(as_alice, alice, echo):
    created = create(as_alice, limits={"daily": 500_000, "total": 900_000})
    deposit_create(user_id=alice.pk, amount=1_000_000)
    robot = bearer(created["key"])
    assert (
        robot.post(
            "/api/v1/tasks/", {"agent": "echo", "input": "x", "budget": 100_000}, format="json"
        ).status_code
        == 201
    )
    url = f"{URL}{created['id']}/"

    response = as_alice.patch(
        url, {"name": "renamed", "limits": {"daily": None, "per_task": 10_000}}, format="json"
    )

    body = response.json()
    assert response.status_code == 200, body
    assert body["name"] == "renamed"
    assert body["limits"] == {"per_task": 10_000, "daily": None, "monthly": None, "total": 900_000}
    assert body["spent"] == {"daily": 100_000, "monthly": 100_000, "total": 100_000}
    assert body["remaining"] == {"daily": None, "monthly": None, "total": 800_000}


def test_patch_of_agents_and_expiry(as_alice, echo):
    created = create(as_alice, agents=["echo"])
    url = f"{URL}{created['id']}/"

    assert as_alice.patch(url, {"agents": None}, format="json").json()["agents"] is None
    assert as_alice.patch(url, {"agents": ["echo"]}, format="json").json()["agents"] == ["echo"]
    soon = timezone.now() + timedelta(days=1)
    assert as_alice.patch(url, {"expires_at": soon.isoformat()}, format="json").json()["expires_at"]
    assert as_alice.patch(url, {"expires_at": None}, format="json").json()["expires_at"] is None


def test_a_revoked_key_cannot_be_changed(as_alice):
    created = create(as_alice)
    as_alice.delete(f"{URL}{created['id']}/")

    response = as_alice.patch(f"{URL}{created['id']}/", {"name": "back"}, format="json")

    assert error(response) == (409, "api_key_revoked")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "", "scopes": ["tasks:read"]}, "name"),
        ({"name": "x", "scopes": ["tasks:read"], "limits": {"daily": 0}}, "limits"),
        ({"name": "x", "scopes": ["tasks:read"], "limits": {"daily": "5"}}, "limits"),
        ({"name": "x", "scopes": ["tasks:read"], "limits": {"daily": 1.5}}, "limits"),
        ({"name": "x", "scopes": ["tasks:read"], "agents": []}, "agents"),
        ({"name": "x", "scopes": ["tasks:read"], "agents": ["nobody"]}, "agents"),
        (
            {"name": "x", "scopes": ["tasks:read"], "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
        ),
    ],
)
def test_invalid_key_settings_are_400(as_alice, echo, body, field):
    response = as_alice.post(URL, body, format="json")

    assert error(response) == (400, "validation_error")
    assert field in response.json()["error"]["fields"]
    assert not ApiKey.objects.exists()


def test_a_user_has_at_most_so_many_live_keys(as_alice, alice, settings):
    settings.API_KEYS_MAX_PER_USER = 2
    first = create(as_alice)
    create(as_alice)

    assert error(as_alice.post(URL, {"name": "3", "scopes": ["tasks:read"]}, format="json")) == (
        409,
        "too_many_api_keys",
    )
    as_alice.delete(f"{URL}{first['id']}/")
    create(as_alice)


def test_keys_are_listed_newest_first_with_revoked_ones(as_alice, alice):
    old, _ = api_key_create(user=alice, name="old", scopes=["tasks:read"])
    api_key_create(user=alice, name="new", scopes=["tasks:read"])
    as_alice.delete(f"{URL}{old.pk}/")

    names = [(k["name"], k["revoked_at"] is None) for k in as_alice.get(URL).json()["results"]]

    assert names == [("new", True), ("old", False)]


def test_a_task_submitted_with_a_key_remembers_it(as_alice, alice, echo):
    created = create(as_alice)
    deposit_create(user_id=alice.pk, amount=1_000_000)

    response = bearer(created["key"]).post(
        "/api/v1/tasks/", {"agent": "echo", "input": "x", "budget": 100_000}, format="json"
    )

    assert response.status_code == 201
    task = Task.objects.get(pk=response.json()["id"])
    assert task.api_key_id == created["id"]
    assert task.api_key_charge.amount == 100_000
