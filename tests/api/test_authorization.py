"""Who may do what, for every endpoint of the URLconf, every method and three kinds of caller.

alice owns the objects; charlie is another signed-in user; the third caller is anonymous.
The parameters come from the URLconf itself, so a new endpoint without an entry below
fails here until someone decides who may use it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from escrow.channels import channel_open
from escrow.keys import key_register
from escrow.models import (
    Account,
    Dispute,
    Escrow,
    PaymentChannel,
    RequesterKey,
    Transfer,
    Voucher,
    Withdrawal,
)
from escrow.services import deposit_create
from execution.models import Receipt
from execution.services import Execution, task_claim, task_settle
from marketplace.apikeys import api_key_create
from marketplace.disputes import dispute_file
from marketplace.models import Agent, AgentBinary, ApiKey, IdempotencyRecord, Task
from marketplace.services import task_submit
from marketplace.webhooks.models import WebhookDelivery, WebhookEndpoint
from marketplace.webhooks.outbox import webhook_create
from marketplace.withdrawals import withdrawal_request
from reputation.models import AgentReputation, ReputationEvent
from tests.factories import UserFactory

from .conftest import MINIMAL_WASM, client_for, make_agent

METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
NOT_ALLOWED = 405


@dataclass
class World:
    alice: User
    charlie: User
    agent: Agent
    queued: Task
    settled: Task
    channel: PaymentChannel
    key: RequesterKey
    api_key: ApiKey
    webhook: WebhookEndpoint
    withdrawal: Withdrawal
    dispute: Dispute


@dataclass(frozen=True)
class ObjectEndpoint:
    """An endpoint about one object alice owns: what alice and charlie get per method."""

    kwargs: Callable[[World], dict[str, Any]]
    owner: dict[str, int]
    other: dict[str, int]
    bodies: dict[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionEndpoint:
    """An endpoint without an object in its path; `public` ones need no credentials."""

    public: bool = False
    # What an anonymous caller gets per method when the endpoint is public.
    anonymous: dict[str, int] = field(default_factory=dict)


def allowed(statuses: dict[str, int]) -> dict[str, int]:
    """Statuses for the methods given; every other method is not allowed for anybody."""
    return {method: statuses.get(method, NOT_ALLOWED) for method in METHODS}


# Function views answer HEAD with 405 like any other method they do not list.
READ_ONLY = {"GET": 200, "OPTIONS": 200}

MATRIX: dict[str, ObjectEndpoint | CollectionEndpoint] = {
    # Agents are a catalogue: anyone signed in reads them; only the owner changes them.
    "api:agent": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed({**READ_ONLY, "PATCH": 200}),
        other=allowed({**READ_ONLY, "PATCH": 403}),
        bodies={"PATCH": lambda: {"name": "Renamed"}},
    ),
    "api:agent-binaries": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed({"OPTIONS": 200, "POST": 201}),
        other=allowed({"OPTIONS": 200, "POST": 403}),
        bodies={"POST": lambda: {"wasm": SimpleUploadedFile("a.wasm", MINIMAL_WASM)}},
    ),
    "api:agent-reputation": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed(READ_ONLY),
        other=allowed(READ_ONLY),
    ),
    "api:agent-versions": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed(READ_ONLY),
        other=allowed(READ_ONLY),
    ),
    "api:agent-openapi": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed(READ_ONLY),
        other=allowed(READ_ONLY),
    ),
    # Tasks are private: to anyone else they do not exist.
    "api:task": ObjectEndpoint(
        kwargs=lambda w: {"task_id": w.queued.pk},
        owner=allowed(READ_ONLY),
        other=allowed({"GET": 404, "OPTIONS": 200}),
    ),
    "api:task-cancel": ObjectEndpoint(
        kwargs=lambda w: {"task_id": w.queued.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    "api:task-receipt": ObjectEndpoint(
        kwargs=lambda w: {"task_id": w.settled.pk},
        owner=allowed(READ_ONLY),
        other=allowed({"GET": 404, "OPTIONS": 200}),
    ),
    # Channels are seen by their requester and their agent's owner; to others they do not exist.
    "api:channel": ObjectEndpoint(
        kwargs=lambda w: {"channel_id": w.channel.pk},
        owner=allowed(READ_ONLY),
        other=allowed({"GET": 404, "OPTIONS": 200}),
    ),
    "api:channel-close": ObjectEndpoint(
        kwargs=lambda w: {"channel_id": w.channel.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    "api:channels": CollectionEndpoint(),
    "api:keys": CollectionEndpoint(),
    # Voucher keys are their user's alone.
    "api:key": ObjectEndpoint(
        kwargs=lambda w: {"key_pk": w.key.pk},
        owner=allowed({"OPTIONS": 200, "DELETE": 204}),
        other=allowed({"OPTIONS": 200, "DELETE": 404}),
    ),
    # Anyone signed in asks for a quote (here without the required `input_bytes`).
    "api:agent-quote": ObjectEndpoint(
        kwargs=lambda w: {"slug": w.agent.slug},
        owner=allowed({"GET": 400, "OPTIONS": 200}),
        other=allowed({"GET": 400, "OPTIONS": 200}),
    ),
    # Webhook endpoints are their user's alone: to anyone else they do not exist.
    "api:webhooks": CollectionEndpoint(),
    "api:webhook": ObjectEndpoint(
        kwargs=lambda w: {"webhook_id": w.webhook.pk},
        owner=allowed({**READ_ONLY, "DELETE": 204}),
        other=allowed({"GET": 404, "OPTIONS": 200, "DELETE": 404}),
    ),
    "api:webhook-deliveries": ObjectEndpoint(
        kwargs=lambda w: {"webhook_id": w.webhook.pk},
        owner=allowed(READ_ONLY),
        other=allowed({"GET": 404, "OPTIONS": 200}),
    ),
    "api:webhook-ping": ObjectEndpoint(
        kwargs=lambda w: {"webhook_id": w.webhook.pk},
        owner=allowed({"OPTIONS": 200, "POST": 202}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    "api:webhook-enable": ObjectEndpoint(
        kwargs=lambda w: {"webhook_id": w.webhook.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    # API keys are managed by their user alone (and never with a key: test_keys_scopes).
    "api:api-keys": CollectionEndpoint(),
    "api:api-key": ObjectEndpoint(
        kwargs=lambda w: {"key_id": w.api_key.pk},
        owner=allowed({**READ_ONLY, "PATCH": 200, "DELETE": 204}),
        other=allowed({"GET": 404, "OPTIONS": 200, "PATCH": 404, "DELETE": 404}),
        bodies={"PATCH": lambda: {"name": "Renamed"}},
    ),
    "api:register": CollectionEndpoint(
        public=True, anonymous=allowed({"OPTIONS": 200, "POST": 400})
    ),
    # Logging in needs no credentials; revoking the token (DELETE) and rotating it do.
    "api:token": CollectionEndpoint(
        public=True, anonymous=allowed({"OPTIONS": 200, "POST": 400, "DELETE": 401})
    ),
    "api:token-rotate": CollectionEndpoint(),
    "api:wallet": CollectionEndpoint(),
    "api:deposits": CollectionEndpoint(),
    "api:transfers": CollectionEndpoint(),
    # Withdrawals are their user's alone: to anyone else they do not exist.
    "api:withdrawals": CollectionEndpoint(),
    "api:withdrawal": ObjectEndpoint(
        kwargs=lambda w: {"withdrawal_id": w.withdrawal.pk},
        owner=allowed(READ_ONLY),
        other=allowed({"GET": 404, "OPTIONS": 200}),
    ),
    "api:withdrawal-cancel": ObjectEndpoint(
        kwargs=lambda w: {"withdrawal_id": w.withdrawal.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    "api:agents": CollectionEndpoint(),
    # A task's requester disputes it; the agent's owner answers. Others find nothing.
    "api:task-dispute": ObjectEndpoint(
        kwargs=lambda w: {"task_id": w.settled.pk},
        owner=allowed({"OPTIONS": 200, "POST": 201}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
        bodies={"POST": lambda: {"reason": "wrong"}},
    ),
    "api:disputes": CollectionEndpoint(),
    "api:dispute-accept": ObjectEndpoint(
        kwargs=lambda w: {"dispute_id": w.dispute.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
    ),
    "api:dispute-contest": ObjectEndpoint(
        kwargs=lambda w: {"dispute_id": w.dispute.pk},
        owner=allowed({"OPTIONS": 200, "POST": 200}),
        other=allowed({"OPTIONS": 200, "POST": 404}),
        bodies={"POST": lambda: {"statement": "it was right"}},
    ),
    "api:tasks": CollectionEndpoint(),
    "api:task-batch": CollectionEndpoint(),
    "api:receipt-public-key": CollectionEndpoint(public=True, anonymous=allowed(READ_ONLY)),
    "api:receipt-public-keys": CollectionEndpoint(public=True, anonymous=allowed(READ_ONLY)),
    "api:receipt-verify": CollectionEndpoint(
        public=True, anonymous=allowed({"OPTIONS": 200, "POST": 400})
    ),
    "api:schema": CollectionEndpoint(
        public=True, anonymous=allowed({"GET": 200, "HEAD": 200, "OPTIONS": 200})
    ),
    "api:docs": CollectionEndpoint(public=True, anonymous=allowed({"GET": 200, "HEAD": 200})),
    # The JSON 404 for any other path under the API.
    "api:not-found": CollectionEndpoint(public=True, anonymous={method: 404 for method in METHODS}),
}


def api_patterns() -> list[tuple[str, bool]]:
    """(name, has an object in its path) for every pattern of the API's URLconf."""
    found = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "api":
            for pattern in entry.url_patterns:
                assert isinstance(pattern, URLPattern), pattern
                assert pattern.name, f"unnamed API pattern {pattern.pattern}"
                converters = getattr(pattern.pattern, "converters", {})
                found.append((f"api:{pattern.name}", bool(converters)))
    return found


PATTERNS = api_patterns()
OBJECT_NAMES = [name for name, has_object in PATTERNS if has_object]


def test_every_endpoint_has_an_entry_in_the_matrix():
    names = {name for name, _ in PATTERNS}
    assert names == set(MATRIX), (
        f"endpoints without an authorization entry: {sorted(names - set(MATRIX))}; "
        f"entries without an endpoint: {sorted(set(MATRIX) - names)}"
    )
    for name, has_object in PATTERNS:
        assert isinstance(MATRIX[name], ObjectEndpoint) == has_object, name


# --- the world and its state ---------------------------------------------------------------


@pytest.fixture
def world(alice, bob, charlie) -> World:
    deposit_create(user_id=alice.pk, amount=1_000_000)
    agent = make_agent(alice, slug="alpha")
    echo = make_agent(bob, slug="echo")
    queued = task_submit(requester=alice, agent=echo, input="q", budget=100_000)
    settled = task_submit(requester=alice, agent=echo, input="s", budget=100_000)
    claim = task_claim(task_id=settled.pk)
    assert claim is not None
    task_settle(
        task_id=settled.pk, attempt=claim[1], execution=Execution(exit_code=0, stdout=b"ok")
    )
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=echo.pk, payee_user_id=bob.pk, deposit=50_000
    )
    for user in (alice, bob, charlie):
        Token.objects.get_or_create(user=user)
    api_key, _ = api_key_create(user=alice, name="robot", scopes=["tasks:read"])
    deposit_create(user_id=alice.pk, amount=1_000_000)
    withdrawal, _ = withdrawal_request(user=alice, amount=1_000_000)
    key = key_register(user_id=alice.pk, public_key=base64.b64encode(bytes(range(32))).decode())
    # bob disputes a task he ran on alice's agent: alice answers it.
    deposit_create(user_id=bob.pk, amount=100_000)
    bobs = task_submit(requester=bob, agent=agent, input="b", budget=100_000)
    claim = task_claim(task_id=bobs.pk)
    assert claim is not None
    task_settle(task_id=bobs.pk, attempt=claim[1], execution=Execution(exit_code=0, stdout=b"ok"))
    return World(
        alice=alice,
        charlie=charlie,
        agent=agent,
        queued=queued,
        settled=settled,
        channel=channel,
        key=key,
        api_key=api_key,
        webhook=webhook_create(owner=alice, url="http://127.0.0.1:9/", events=["task.failed"]),
        withdrawal=withdrawal,
        dispute=dispute_file(task_id=bobs.pk, user=bob, reason="wrong"),
    )


def state() -> dict[str, Any]:
    """Everything a request could change."""
    return {
        "users": list(User.objects.order_by("pk").values_list("pk", "username", "password")),
        "tokens": list(Token.objects.order_by("pk").values_list("pk")),
        "accounts": list(Account.objects.order_by("pk").values_list("pk", "balance")),
        "transfers": list(Transfer.objects.order_by("pk").values_list("pk", "amount")),
        "escrows": list(Escrow.objects.order_by("pk").values_list("pk", "status")),
        "tasks": list(Task.objects.order_by("pk").values_list("pk", "status", "attempts")),
        "agents": list(Agent.objects.order_by("pk").values()),
        "binaries": list(AgentBinary.objects.order_by("pk").values_list("pk", "sha256")),
        "reputation": list(AgentReputation.objects.order_by("pk").values_list("pk", "score")),
        "events": list(ReputationEvent.objects.order_by("pk").values_list("pk")),
        "receipts": list(Receipt.objects.order_by("pk").values_list("pk")),
        "idempotency": list(IdempotencyRecord.objects.order_by("pk").values_list("pk")),
        "channels": list(PaymentChannel.objects.order_by("pk").values()),
        "vouchers": list(Voucher.objects.order_by("pk").values_list("pk")),
        "api_keys": list(ApiKey.objects.order_by("pk").values()),
        "keys": list(RequesterKey.objects.order_by("pk").values_list("pk", "revoked_at")),
        "webhooks": list(WebhookEndpoint.objects.order_by("pk").values()),
        "webhook_events": list(WebhookDelivery.objects.order_by("pk").values_list("pk")),
        "withdrawals": list(Withdrawal.objects.order_by("pk").values_list("pk", "status")),
    }


def call(client: APIClient, method: str, url: str, body: Any = None):
    if isinstance(body, dict) and any(isinstance(v, SimpleUploadedFile) for v in body.values()):
        return client.generic(method, url, **_multipart(client, body))
    handler = getattr(client, method.lower())
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return handler(url)
    return handler(url, body if body is not None else {}, format="json")


def _multipart(client: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    from django.test.client import MULTIPART_CONTENT, encode_multipart

    boundary = "BoUnDaRy"
    return {
        "data": encode_multipart(boundary, body),
        "content_type": MULTIPART_CONTENT.replace("BoUnDaRyStRiNg", boundary),
    }


# --- the matrix ---------------------------------------------------------------------------


def object_cases():
    for name, has_object in PATTERNS:
        if not has_object:
            continue
        for actor in ("owner", "other", "anonymous"):
            for method in METHODS:
                yield pytest.param(name, actor, method, id=f"{name}-{actor}-{method}")


@pytest.mark.parametrize(("name", "actor", "method"), list(object_cases()))
def test_object_endpoints_let_only_the_owner_in(world, name, actor, method):
    endpoint = MATRIX.get(name)
    assert isinstance(endpoint, ObjectEndpoint), f"no authorization entry for {name}"
    url = reverse(name, kwargs=endpoint.kwargs(world))
    body = endpoint.bodies.get(method, dict)()
    client = {
        "owner": client_for(world.alice),
        "other": client_for(world.charlie),
        "anonymous": APIClient(),
    }[actor]
    expected = {"owner": endpoint.owner, "other": endpoint.other, "anonymous": None}[actor]
    before = state()

    response = call(client, method, url, body)

    if expected is None:
        assert response.status_code == 401, response.content
    else:
        assert response.status_code == expected[method], response.content
    if response.status_code >= 400 and method != "HEAD":
        assert set(response.json()) == {"error"}
    if actor != "owner":
        assert state() == before, f"{actor} {method} {url} changed something"


def test_what_others_see_of_a_task_is_what_a_missing_task_gets(world):
    """404 for another user's task says nothing a made-up id would not say."""
    charlie = client_for(world.charlie)
    missing = "00000000-0000-4000-8000-000000000000"
    for name in ("api:task", "api:task-cancel", "api:task-receipt"):
        method = "post" if name == "api:task-cancel" else "get"
        theirs = getattr(charlie, method)(reverse(name, kwargs={"task_id": world.queued.pk}))
        made_up = getattr(charlie, method)(reverse(name, kwargs={"task_id": missing}))
        assert (theirs.status_code, theirs.json()) == (made_up.status_code, made_up.json())


def collection_cases():
    for name, has_object in PATTERNS:
        if has_object:
            continue
        for method in METHODS:
            yield pytest.param(name, method, id=f"{name}-{method}")


@pytest.mark.parametrize(("name", "method"), list(collection_cases()))
def test_collection_endpoints_need_credentials_unless_public(world, name, method):
    endpoint = MATRIX.get(name)
    assert isinstance(endpoint, CollectionEndpoint), f"no authorization entry for {name}"
    url = "/api/v1/no-such-endpoint/" if name == "api:not-found" else reverse(name)
    before = state()

    response = call(APIClient(), method, url)

    expected = endpoint.anonymous[method] if endpoint.public else 401
    assert response.status_code == expected, response.content
    assert state() == before


def test_signed_in_users_see_only_their_own_lists(world):
    charlie = client_for(world.charlie)
    UserFactory.create(username="dora")

    assert charlie.get(reverse("api:tasks")).json()["count"] == 0
    assert charlie.get(reverse("api:transfers")).json()["count"] == 0
    assert charlie.get(reverse("api:withdrawals")).json()["count"] == 0
    assert charlie.get(reverse("api:wallet")).json() == {
        "balance": 0,
        "held_in_escrow": 0,
        "in_channels": 0,
        "pending_earnings": 0,
        "next_release_at": None,
    }
    assert client_for(world.alice).get(reverse("api:tasks")).json()["count"] == 2
