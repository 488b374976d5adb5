"""Four worker processes, 800 tasks, shared wallets, submissions racing settlements:
every micro-credit accounted for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db.models import Sum

from escrow.audit import ledger_audit
from escrow.channels import channel_close, channel_open, key_register
from escrow.models import Account
from escrow.services import deposit_create, system_balance
from execution.models import Receipt
from marketplace.binaries import binary_upload
from marketplace.models import Task
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests.concurrency import run_threads
from tests.factories import KEY, AgentFactory, UserFactory, held_for, public, sign
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _one_requester_submits_hundreds(settings):
    # These tests load one requester far past the abuse limit on purpose.
    settings.MAX_TASKS_IN_FLIGHT = 100_000


ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
WORKERS, PER_WORKER = 4, 200
FUNDS = 100_000_000
CHANNEL_DEPOSIT = 20_000_000


def test_four_workers_settle_every_task_once_while_submissions_race_them(capsys):
    requesters = [UserFactory.create(username=f"r{i}") for i in range(3)]
    owners = [UserFactory.create(username=f"o{i}") for i in range(2)]
    agents = []
    for i, owner in enumerate(owners):
        agent = AgentFactory.create(
            owner=owner, slug=f"echo-{i}", base_fee=500 + i, fuel_price=3_000
        )
        binary_upload(agent=agent, data=ECHO.read_bytes())
        agent.refresh_from_db()
        agents.append(agent)
    channels = {}
    for user in requesters:
        deposit_create(user_id=user.pk, amount=FUNDS)
        key_register(user_id=user.pk, public_key=public(KEY))
        channels[user.pk] = channel_open(
            requester_user_id=user.pk,
            agent_id=agents[0].pk,
            payee_user_id=owners[0].pk,
            deposit=CHANNEL_DEPOSIT,
        )
    total = WORKERS * PER_WORKER

    def submitter(index: int) -> None:
        requester = requesters[index]
        channel, nonce, authorized = channels[requester.pk], 0, 0
        for i in range(index, total, len(requesters)):
            budget = 20_000 + i
            if i % 2:  # every other task pays through the requester's channel
                nonce, authorized = nonce + 1, authorized + budget
                task_submit(
                    requester=requester,
                    agent=agents[0],
                    input=f"task {i} " * (i % 50),
                    budget=budget,
                    payment="channel",
                    channel=str(channel.pk),
                    voucher=sign(channel.pk, nonce, authorized),
                )
            else:
                task_submit(
                    requester=requester,
                    agent=agents[i % 4 // 2],
                    input=f"task {i} " * (i % 50),
                    budget=budget,
                )

    with Cluster(workers=WORKERS) as cluster:
        started = time.monotonic()
        errors = run_threads(len(requesters), submitter)
        submitted = time.monotonic()
        assert not errors, errors[:3]
        wait_for(
            lambda: Task.objects.filter(status__in=Task.FINAL_STATUSES).count() == total,
            timeout=300,
            every=0.2,
            message=f"{total} tasks to finish",
            cluster=cluster,
        )
        finished = time.monotonic()

    assert Task.objects.filter(status="succeeded").count() == total
    assert ReputationEvent.objects.count() == total
    assert Receipt.objects.count() == total
    assert set(Task.objects.values_list("attempts", flat=True)) == {1}
    for channel in channels.values():
        channel_close(channel_id=channel.pk, by_user_id=channel.requester_id)
    costs = Task.objects.aggregate(cost=Sum("cost"), fee=Sum("fee"))
    lost_by_requesters = sum(FUNDS - Account.objects.get(user=u).balance for u in requesters)
    earned_by_owners = sum(Account.objects.get(user=u).balance + held_for(u) for u in owners)
    platform = system_balance("platform_fees")
    assert lost_by_requesters == costs["cost"]
    assert earned_by_owners + platform == costs["cost"]
    assert platform == costs["fee"]
    for kind in ("escrow", "channels"):
        assert system_balance(kind) == 0
    report = ledger_audit()
    assert report.ok, report.violations
    with capsys.disabled():
        print(
            f"\n  load: {total} tasks (half through channels) submitted by 3 threads in "
            f"{submitted - started:.1f}s while 4 workers ran them; all settled after "
            f"{finished - started:.1f}s ({total / (finished - started):.0f} tasks/s); "
            f"requesters paid {costs['cost']} µCR"
        )
