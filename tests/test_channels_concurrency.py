"""Concurrent channel tasks on real PostgreSQL: never more than authorized, never twice."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

import pytest
from django.db.models import Sum

from escrow import errors
from escrow.audit import ledger_audit
from escrow.channels import channel_close, channel_open, key_register
from escrow.models import Account, Escrow, PaymentChannel
from escrow.services import deposit_create, system_balance
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Task
from marketplace.services import task_submit
from tests.concurrency import run_threads
from tests.factories import KEY, UserFactory, held_for, make_agent, public, sign

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEPOSIT = 5_000_000
REFUSALS = (
    errors.VoucherStale,
    errors.VoucherReplayed,
    errors.VoucherInsufficient,
    errors.VoucherExceedsDeposit,
)


@pytest.fixture
def setup():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=DEPOSIT)
    key_register(user_id=alice.pk, public_key=public(KEY))
    agent = make_agent(bob, fuel_price=1_000)
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=DEPOSIT
    )
    return alice, bob, agent, channel


def submit(alice, agent, channel, voucher, budget: int) -> Task:
    return task_submit(
        requester=alice,
        agent=agent,
        input="x",
        budget=budget,
        payment="channel",
        channel=str(channel.pk),
        voucher=voucher,
    )


def test_concurrent_submissions_and_settlements_never_redeem_more_than_authorized(setup):
    alice, bob, agent, channel = setup
    nonces = itertools.count(1)
    counter_lock = threading.Lock()
    outcome: Counter[str] = Counter()
    submitted: list[Task] = []

    def submitter(index: int) -> None:
        rng = random.Random(index)
        for _ in range(40):
            budget = rng.randint(1_000, 60_000)
            with counter_lock:
                nonce = next(nonces)
                snapshot = PaymentChannel.objects.get(pk=channel.pk)
            # Cover what the channel needed when we looked, plus a random margin: racing
            # submitters make some of these stale or short, which must be refused cleanly.
            amount = snapshot.redeemed + snapshot.reserved + budget + rng.randint(0, 200_000)
            try:
                task = submit(alice, agent, channel, sign(channel.pk, nonce, amount), budget)
            except REFUSALS as exc:
                with counter_lock:
                    outcome[type(exc).__name__] += 1
                continue
            with counter_lock:
                outcome["accepted"] += 1
                submitted.append(task)

    def settler(index: int) -> None:
        rng = random.Random(100 + index)
        for _ in range(400):
            queued = list(Task.objects.filter(status="queued").values_list("pk", flat=True)[:5])
            for task_id in queued:
                claim = task_claim(task_id=task_id)
                if claim is None:
                    continue
                task, attempt = claim
                if rng.random() < 0.25:
                    run = Execution(reason="trap")
                else:
                    run = Execution(
                        exit_code=0, fuel_used=rng.randint(0, 10**8), fuel_limit=10**9, elapsed_ms=1
                    )
                task_settle(task_id=task.pk, attempt=attempt, execution=run)
            if not queued and outcome["done"]:
                return

    def body(index: int) -> None:
        if index < 6:
            submitter(index)
            if index == 0:
                outcome["done"] = 1
        else:
            settler(index)

    errors_seen = run_threads(8, body)
    assert not errors_seen, errors_seen[:3]
    for task in Task.objects.filter(status="queued"):
        task_claim(task_id=task.pk)
        task_settle(task_id=task.pk, attempt=1, execution=Execution(reason="trap"))

    channel.refresh_from_db()
    completed = Escrow.objects.filter(channel=channel, status="completed")
    assert outcome["accepted"] == len(submitted) > 20
    assert (channel.in_flight, channel.reserved) == (0, 0)
    assert channel.redeemed == (completed.aggregate(s=Sum("cost"))["s"] or 0)
    assert channel.redeemed <= channel.authorized <= channel.deposit
    assert Task.objects.filter(status__in=["queued", "running"]).count() == 0
    report = ledger_audit()
    assert report.ok, report.violations

    channel = channel_close(channel_id=channel.pk, by_user_id=alice.pk)
    assert channel.status == "settled"
    # The owner's share waits as held earnings until the hold ends.
    assert Account.objects.get(user=bob).balance + held_for(bob) == channel.redeemed - channel.fees
    assert Account.objects.get(user=alice).balance == DEPOSIT - channel.redeemed
    assert system_balance("channels") == 0


def test_one_voucher_sent_by_twelve_threads_at_once_is_accepted_once(setup):
    alice, _bob, agent, channel = setup
    voucher = sign(channel.pk, 1, 100_000)
    accepted, refused = [], []

    def send(_index: int) -> None:
        try:
            accepted.append(submit(alice, agent, channel, voucher, 100_000).pk)
        except errors.VoucherReplayed:
            refused.append(1)

    errors_seen = run_threads(12, send)
    assert not errors_seen, errors_seen[:3]
    assert (len(accepted), len(refused)) == (1, 11)
    channel.refresh_from_db()
    assert (channel.nonce, channel.reserved, channel.in_flight) == (1, 100_000, 1)
    task = Task.objects.get()
    task_claim(task_id=task.pk)
    task_settle(task_id=task.pk, attempt=1, execution=Execution(reason="trap"))


def test_closing_while_submissions_race_it_settles_once_with_every_task_counted(setup):
    alice, bob, agent, channel = setup
    nonces = itertools.count(1)
    counter_lock = threading.Lock()
    accepted: list[Task] = []
    refused: Counter[str] = Counter()
    closed = threading.Event()

    def submitter(index: int) -> None:
        for _ in range(25):
            with counter_lock:
                nonce = next(nonces)
            try:
                task = submit(alice, agent, channel, sign(channel.pk, nonce, DEPOSIT), 10_000)
            except (errors.ChannelNotOpen, *REFUSALS) as exc:
                with counter_lock:
                    refused[type(exc).__name__] += 1
                continue
            with counter_lock:
                accepted.append(task)

    def closer(_index: int) -> None:
        deadline = time.monotonic() + 30
        while len(accepted) < 10 and time.monotonic() < deadline:
            time.sleep(0.001)
        channel_close(channel_id=channel.pk, by_user_id=bob.pk)
        closed.set()

    errors_seen = run_threads(5, lambda i: closer(i) if i == 4 else submitter(i))
    assert not errors_seen, errors_seen[:3]
    assert closed.is_set() and refused["ChannelNotOpen"] > 0
    channel.refresh_from_db()
    # Every accepted task was reserved before the close; none after it.
    assert channel.status == "closing"
    assert (channel.in_flight, channel.reserved) == (len(accepted), 10_000 * len(accepted))
    for i, task in enumerate(accepted):
        task_claim(task_id=task.pk)
        run = Execution(exit_code=0, fuel_used=i * 1_000, fuel_limit=10**6, elapsed_ms=1)
        task_settle(task_id=task.pk, attempt=1, execution=run)
    channel.refresh_from_db()
    costs = Task.objects.aggregate(cost=Sum("cost"), fee=Sum("fee"))
    assert (channel.status, channel.redeemed, channel.fees) == (
        "settled",
        costs["cost"],
        costs["fee"],
    )
    assert Account.objects.get(user=bob).balance + held_for(bob) == costs["cost"] - costs["fee"]
    assert Account.objects.get(user=alice).balance == DEPOSIT - costs["cost"]
    assert system_balance("channels") == 0
