"""An API key's agent allowlist limits everything the key does to those agents.

alice holds a key limited to one agent. bob owns the agents she pays for (echo, which her
key may use, and shout, which it may not); alice owns two agents of her own (alpha, on the
key's list, and beta, not). Outside its list the key gets 403 `agent_not_allowed` and
changes nothing: no edit, no upload, no new agent, no task read, listed or cancelled, no
receipt, no channel read or closed, no spending. charlie's things stay as absent as ever
(404), and a key without a list keeps acting for the whole account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from escrow.channels import channel_open
from escrow.models import Account, PaymentChannel
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from marketplace.models import Agent, AgentBinary, Task
from marketplace.services import task_submit

from .conftest import MINIMAL_WASM, error, make_agent

pytestmark = pytest.mark.django_db
ALL_SCOPES = list(ApiKey.Scope.values)
BUDGET = 100_000
DEPOSIT = 1_000_000


@dataclass
class World:
    echo: Agent
    shout: Agent
    alpha: Agent
    beta: Agent
    echo_task: Task
    shout_task: Task
    shout_settled: Task
    charlie_task: Task
    echo_channel: PaymentChannel
    shout_channel: PaymentChannel


def settled(task: Task) -> Task:
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    execution = Execution(exit_code=0, stdout=b"ok", fuel_used=1_000_000)
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=execution)
    return Task.objects.get(pk=task.pk)


def opened(user: Any, agent: Agent) -> PaymentChannel:
    return channel_open(
        requester_user_id=user.pk, agent_id=agent.pk, payee_user_id=agent.owner_id, deposit=DEPOSIT
    )


@pytest.fixture
def world(alice, bob, charlie) -> World:
    for user in (alice, charlie):
        deposit_create(user_id=user.pk, amount=50_000_000)
    echo, shout = make_agent(bob, slug="echo"), make_agent(bob, slug="shout")
    alpha, beta = make_agent(alice, slug="alpha"), make_agent(alice, slug="beta")
    return World(
        echo=echo,
        shout=shout,
        alpha=alpha,
        beta=beta,
        echo_task=task_submit(requester=alice, agent=echo, input="hi", budget=BUDGET),
        shout_task=task_submit(requester=alice, agent=shout, input="hi", budget=BUDGET),
        shout_settled=settled(task_submit(requester=alice, agent=shout, input="x", budget=BUDGET)),
        charlie_task=task_submit(requester=charlie, agent=echo, input="hi", budget=BUDGET),
        echo_channel=opened(alice, echo),
        shout_channel=opened(alice, shout),
    )


def bearer(user: Any, agents: list[Agent] | None) -> APIClient:
    _, raw = api_key_create(user=user, name="robot", scopes=ALL_SCOPES, agents=agents)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def robot(alice, world) -> APIClient:
    """alice's key for echo and alpha only."""
    return bearer(alice, [world.echo, world.alpha])


def balance(user: Any) -> int:
    return Account.objects.get(user=user).balance


def refused(response) -> None:
    assert error(response) == (403, "agent_not_allowed"), response.content
    assert response.json()["error"]["fields"] == {"agents": ["alpha", "echo"]}


# --- agents: editing, uploads, creation ----------------------------------------------------


def test_it_refuses_to_edit_an_agent_outside_its_list(robot, world):
    response = robot.patch(f"/api/v1/agents/{world.beta.slug}/", {"base_fee": 1}, format="json")

    refused(response)
    world.beta.refresh_from_db()
    assert world.beta.base_fee == 1_000


def test_it_edits_an_agent_on_its_list(robot, world):
    response = robot.patch(f"/api/v1/agents/{world.alpha.slug}/", {"base_fee": 7}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["base_fee"] == 7


def test_it_refuses_to_upload_a_binary_to_an_agent_outside_its_list(robot, world):
    before = AgentBinary.objects.filter(agent=world.beta).count()

    response = robot.post(
        f"/api/v1/agents/{world.beta.slug}/binaries/",
        {"wasm": SimpleUploadedFile("a.wasm", MINIMAL_WASM)},
        format="multipart",
    )

    refused(response)
    assert AgentBinary.objects.filter(agent=world.beta).count() == before


def test_it_uploads_a_binary_to_an_agent_on_its_list(robot, world):
    response = robot.post(
        f"/api/v1/agents/{world.alpha.slug}/binaries/",
        {"wasm": SimpleUploadedFile("a.wasm", MINIMAL_WASM)},
        format="multipart",
    )

    assert response.status_code == 201, response.content


def test_it_cannot_create_an_agent(robot, world):
    body = {"slug": "gamma", "name": "Gamma", "base_fee": 1, "fuel_price": 1}

    response = robot.post("/api/v1/agents/", body, format="json")

    refused(response)
    assert not Agent.objects.filter(slug="gamma").exists()


def test_it_is_refused_before_the_owner_check_for_someone_elses_agent(robot, world):
    # bob's shout is outside the list: the key learns nothing about who owns it.
    response = robot.patch(f"/api/v1/agents/{world.shout.slug}/", {"name": "x"}, format="json")

    refused(response)


def test_the_catalogue_stays_readable(robot, world):
    assert robot.get(f"/api/v1/agents/{world.shout.slug}/").status_code == 200
    assert robot.get("/api/v1/agents/").json()["count"] == 4


# --- tasks and receipts --------------------------------------------------------------------


def test_its_task_list_shows_only_its_agents_tasks(robot, world):
    listed = robot.get("/api/v1/tasks/").json()

    assert [task["id"] for task in listed["results"]] == [str(world.echo_task.pk)]
    assert listed["count"] == 1


def test_it_is_refused_a_task_list_of_another_agent(robot, world):
    refused(robot.get("/api/v1/tasks/", {"agent": "shout"}))
    assert robot.get("/api/v1/tasks/", {"agent": "echo"}).json()["count"] == 1


def test_it_is_refused_a_task_of_another_agent(robot, world):
    refused(robot.get(f"/api/v1/tasks/{world.shout_task.pk}/"))
    assert robot.get(f"/api/v1/tasks/{world.echo_task.pk}/").status_code == 200


def test_it_cannot_cancel_a_task_of_another_agent(robot, world, alice):
    before = balance(alice)

    refused(robot.post(f"/api/v1/tasks/{world.shout_task.pk}/cancel/"))

    assert Task.objects.get(pk=world.shout_task.pk).status == Task.Status.QUEUED
    assert balance(alice) == before


def test_it_cancels_a_task_of_its_agent(robot, world):
    response = robot.post(f"/api/v1/tasks/{world.echo_task.pk}/cancel/")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"


def test_it_is_refused_the_receipt_of_another_agents_task(robot, world):
    refused(robot.get(f"/api/v1/tasks/{world.shout_settled.pk}/receipt/"))


def test_someone_elses_task_is_still_absent(robot, world):
    response = robot.get(f"/api/v1/tasks/{world.charlie_task.pk}/")

    assert error(response) == (404, "task_not_found")


def test_it_cannot_spend_on_another_agent(robot, world, alice):
    before = (balance(alice), Task.objects.count())

    response = robot.post(
        "/api/v1/tasks/", {"agent": "shout", "input": "hi", "budget": BUDGET}, format="json"
    )

    refused(response)
    assert (balance(alice), Task.objects.count()) == before


# --- channels ------------------------------------------------------------------------------


def test_its_channel_list_shows_only_its_agents_channels(robot, world):
    listed = robot.get("/api/v1/channels/").json()

    assert [channel["id"] for channel in listed["results"]] == [str(world.echo_channel.pk)]


def test_it_is_refused_a_channel_of_another_agent(robot, world):
    refused(robot.get(f"/api/v1/channels/{world.shout_channel.pk}/"))


def test_it_cannot_close_a_channel_of_another_agent(robot, world):
    refused(robot.post(f"/api/v1/channels/{world.shout_channel.pk}/close/"))

    world.shout_channel.refresh_from_db()
    assert world.shout_channel.status == PaymentChannel.Status.OPEN


# --- a key without a list ------------------------------------------------------------------


def test_a_key_without_a_list_acts_for_the_whole_account(alice, world):
    anything = bearer(alice, None)

    assert anything.get("/api/v1/tasks/").json()["count"] == 3
    assert anything.get(f"/api/v1/tasks/{world.shout_task.pk}/").status_code == 200
    assert anything.get("/api/v1/channels/").json()["count"] == 2
    patched = anything.patch(f"/api/v1/agents/{world.beta.slug}/", {"name": "B"}, format="json")
    assert patched.status_code == 200
    created = anything.post(
        "/api/v1/agents/",
        {"slug": "gamma", "name": "Gamma", "base_fee": 1, "fuel_price": 1},
        format="json",
    )
    assert created.status_code == 201, created.content
