"""Four worker processes, 800 tasks, shared wallets: every micro-credit accounted for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db.models import Sum

from escrow.audit import ledger_audit
from escrow.models import Account
from escrow.services import deposit_create, system_account_id
from execution.models import Receipt
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests.factories import AgentFactory, UserFactory
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
WORKERS, PER_WORKER = 4, 200
FUNDS = 100_000_000


def test_four_workers_settle_every_task_once_against_shared_wallets(capsys):
    requesters = [UserFactory.create(username=f"r{i}") for i in range(3)]
    owners = [UserFactory.create(username=f"o{i}") for i in range(2)]
    for user in requesters:
        deposit_create(user_id=user.pk, amount=FUNDS)
    agents = []
    for i, owner in enumerate(owners):
        agent = AgentFactory.create(
            owner=owner, slug=f"echo-{i}", base_fee=500 + i, fuel_price=3_000
        )
        binary_upload(agent=agent, data=ECHO.read_bytes())
        agent.refresh_from_db()
        agents.append(agent)
    total = WORKERS * PER_WORKER
    started = time.monotonic()
    for i in range(total):
        task_submit(
            requester=requesters[i % 3],
            agent=agents[i % 2],
            input=f"task {i} " * (i % 50),
            budget=20_000 + i,
        )
    submitted = time.monotonic()
    with Cluster(workers=WORKERS) as cluster:
        wait_for(
            lambda: Task.objects.filter(status__in=Task.FINAL_STATUSES).count() == total,
            timeout=300,
            every=0.2,
            message="{total} tasks to finish",
            cluster=cluster,
        )
    finished = time.monotonic()

    assert Task.objects.filter(status="succeeded").count() == total
    assert ReputationEvent.objects.count() == total
    assert Receipt.objects.count() == total
    assert set(Task.objects.values_list("attempts", flat=True)) == {1}
    costs = Task.objects.aggregate(cost=Sum("cost"), fee=Sum("fee"))
    lost_by_requesters = sum(FUNDS - Account.objects.get(user=u).balance for u in requesters)
    earned_by_owners = sum(Account.objects.get(user=u).balance for u in owners)
    platform = Account.objects.get(pk=system_account_id("platform_fees")).balance
    assert lost_by_requesters == costs["cost"]
    assert earned_by_owners + platform == costs["cost"]
    assert platform == costs["fee"]
    assert Account.objects.get(pk=system_account_id("escrow")).balance == 0
    report = ledger_audit()
    assert report.ok, report.violations
    with capsys.disabled():
        print(
            f"\n  load: {total} tasks submitted in {submitted - started:.1f}s, run and settled by "
            f"{WORKERS} workers in {finished - submitted:.1f}s "
            f"({total / (finished - submitted):.0f} tasks/s); requesters paid {costs['cost']} µCR"
        )
