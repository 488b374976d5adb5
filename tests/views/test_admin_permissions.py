"""Operators' actions that move money or change access need a permission of their own.

For every such action of the admin: a staff user who may only view the model (or even
change it) neither sees the action nor can run it by posting it; a staff user holding the
action's own permission sees it and runs it; a superuser holds every permission. The
admin's own actions are found by reading the registry, so a new action without a
permission fails `test_every_action_declares_a_permission`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_q.models import Failure

from escrow.models import Dispute
from escrow.payout_models import FundingDiscrepancy
from execution.services import task_claim
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from marketplace.disputes import dispute_contest, dispute_file
from marketplace.models import Agent, Task
from marketplace.webhooks.models import WebhookEndpoint
from tests.views.conftest import settle, submit
from tests.views.test_admin import action, changelist

pytestmark = pytest.mark.django_db
PASSWORD = "a long enough passphrase"


@dataclass(frozen=True)
class Case:
    model: Any  # a model class
    action: str
    permission: str  # "app_label.codename"
    make: Callable[[Any], Any]  # the world → the object the action works on
    done: Callable[[Any], bool]  # whether the action did its work on it


def _stuck(world: Any, *, expired: bool) -> Task:
    task = submit(world.alice, world.echo)
    task_claim(task_id=task.pk)
    if expired:
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    return task


def _status(model: Any, obj: Any) -> str:
    return model.objects.get(pk=obj.pk).status


def _contested(world: Any) -> Dispute:
    task = settle(submit(world.alice, world.echo))
    dispute = dispute_file(task_id=task.pk, user=world.alice, reason="wrong answer")
    return dispute_contest(dispute_id=dispute.pk, user=world.bob, statement="it was right")


def _disabled_endpoint(world: Any) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        owner=world.alice, url="https://hooks.example.com/x", events="task.succeeded"
    )
    endpoint.secret = "s"
    endpoint.disabled_at = timezone.now()
    endpoint.save()
    return endpoint


def _suspended(world: Any) -> Agent:
    Agent.objects.filter(pk=world.echo.pk).update(status=Agent.Status.SUSPENDED)
    return world.echo


CASES = [
    Case(
        Agent,
        "suspend",
        "marketplace.suspend_agent",
        lambda w: w.echo,
        lambda agent: _status(Agent, agent) == "suspended",
    ),
    Case(
        Agent,
        "activate",
        "marketplace.suspend_agent",
        _suspended,
        lambda agent: _status(Agent, agent) == "active",
    ),
    Case(
        Task,
        "refund",
        "marketplace.refund_task",
        lambda w: _stuck(w, expired=False),
        lambda task: _status(Task, task) == "failed",
    ),
    Case(
        Task,
        "requeue",
        "marketplace.requeue_task",
        lambda w: _stuck(w, expired=True),
        lambda task: _status(Task, task) == "queued",
    ),
    Case(
        ApiKey,
        "revoke",
        "marketplace.revoke_apikey",
        lambda w: api_key_create(user=w.alice, name="robot", scopes=["tasks:read"])[0],
        lambda key: ApiKey.objects.get(pk=key.pk).revoked_at is not None,
    ),
    Case(
        Dispute,
        "refund",
        "escrow.decide_dispute",
        _contested,
        lambda dispute: _status(Dispute, dispute) == "refunded",
    ),
    Case(
        Dispute,
        "reject",
        "escrow.decide_dispute",
        _contested,
        lambda dispute: _status(Dispute, dispute) == "rejected",
    ),
    Case(
        FundingDiscrepancy,
        "mark_resolved",
        "escrow.resolve_fundingdiscrepancy",
        lambda w: FundingDiscrepancy.objects.create(
            kind="collect_unmatched",
            provider="test",
            reference="ref",
            our_status="missing",
            provider_status="collected",
        ),
        lambda flag: FundingDiscrepancy.objects.get(pk=flag.pk).resolved_at is not None,
    ),
    Case(
        WebhookEndpoint,
        "enable",
        "marketplace.enable_webhookendpoint",
        _disabled_endpoint,
        lambda endpoint: WebhookEndpoint.objects.get(pk=endpoint.pk).disabled_at is None,
    ),
    # django-q2's models take no permission of ours: resubmitting needs their change one.
    Case(
        Failure,
        "resubmit_jobs",
        "django_q.change_failure",
        lambda w: Failure.objects.create(
            id="f" * 32,
            name="failed-job",
            func="math.floor",
            args=(1.5,),
            kwargs={},
            started=timezone.now(),
            stopped=timezone.now(),
            success=False,
        ),
        lambda job: not Failure.objects.filter(pk=job.pk).exists(),
    ),
]
IDS = [f"{case.model.__name__}-{case.action}" for case in CASES]


@dataclass
class World:
    alice: Any
    bob: Any
    echo: Agent


@pytest.fixture
def world(funded_alice, bob, echo) -> World:
    return World(alice=funded_alice, bob=bob, echo=echo)


def staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    for codename in codenames:
        app_label, name = codename.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=name)
        )
    client = Client()
    client.force_login(user)
    return client


def model_perm(model: Any, verb: str) -> str:
    return f"{model._meta.app_label}.{verb}_{model._meta.model_name}"


def offered(client: Client, model: Any) -> set[str]:
    """The actions the changelist offers this user."""
    response = client.get(changelist(model))
    assert response.status_code == 200
    form = response.context["action_form"] if response.context else None
    if form is None:
        return set()
    return {name for name, _ in form.fields["action"].choices if name}


def test_every_action_declares_a_permission():
    for model, model_admin in admin.site._registry.items():
        for entry in model_admin.actions or ():
            found: Any = model_admin.get_action(entry)  # an Action (the stubs say a tuple)
            assert getattr(found.func, "allowed_permissions", None), f"{model}: {found.name}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_view_only_operator_neither_sees_nor_runs_the_action(world, case):
    target = case.make(world)
    # Viewing, and changing where that is not what the action asks for, are not enough.
    change = model_perm(case.model, "change")
    viewer = staff("viewer", model_perm(case.model, "view"), *{change} - {case.permission})

    assert case.action not in offered(viewer, case.model)
    action(viewer, case.model, case.action, target.pk)

    assert not case.done(target)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_operator_with_the_actions_permission_runs_it(world, case):
    target = case.make(world)
    allowed = staff("allowed", model_perm(case.model, "view"), case.permission)

    assert case.action in offered(allowed, case.model)
    action(allowed, case.model, case.action, target.pk)

    assert case.done(target)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_superuser_runs_every_action(world, case):
    target = case.make(world)
    root = Client()
    root.force_login(User.objects.create_superuser("root", password=PASSWORD))

    assert case.action in offered(root, case.model)
    action(root, case.model, case.action, target.pk)

    assert case.done(target)
