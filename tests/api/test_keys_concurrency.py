"""An API key's limits under concurrency, on real PostgreSQL: real threads, each with its own
connection and its own transactions, all racing one key.

N submissions against a limit that fits k budgets: exactly k are accepted and N − k are
refused with `spend_limit_exceeded`, for the daily, monthly and lifetime limits alike — the
key's row lock makes the checks and the counts one at a time, so no race overshoots by a
single µCR. Settlements giving back while submissions count never deadlock and leave the
counters exact. The ledger audit runs after each test (tests/conftest.py).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest
from django.db.models import Sum

from escrow.errors import InsufficientFunds
from escrow.models import PaymentChannel
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys import api_key_channel_open, api_key_create, api_key_spending
from marketplace.errors import SpendLimitExceeded
from marketplace.models import Task
from marketplace.services import task_submit
from tests.concurrency import run_threads
from tests.factories import UserFactory, make_agent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

N = 32
K = 10
BUDGET = 100_000
COST = 3_000  # 1 000 µCR base fee + 1 000 000 fuel at 2 000 µCR per million


@pytest.fixture
def world():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000_000_000)
    agent = make_agent(bob, slug="echo")
    return alice, agent


def race(count: int, attempt) -> tuple[Counter[str], list[BaseException]]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def body(index: int) -> None:
        try:
            attempt(index)
            outcome = "accepted"
        except SpendLimitExceeded as refused:
            outcome = f"refused:{refused.fields['limit']}"
        with lock:
            outcomes[outcome] += 1

    return outcomes, run_threads(count, body)


def spent(key: ApiKey) -> tuple[int, int, int]:
    key.refresh_from_db()
    spending = api_key_spending(key)
    return spending.daily, spending.monthly, spending.total


@pytest.mark.parametrize("limit", ["daily", "monthly", "total"])
@pytest.mark.parametrize("slack", [0, BUDGET - 1], ids=["exact", "one-short-of-another"])
def test_concurrent_submissions_never_overshoot_a_limit(world, limit, slack, capsys):
    alice, agent = world
    cap = K * BUDGET + slack
    key, _ = api_key_create(user=alice, name="racer", scopes=["tasks:write"], limits={limit: cap})

    outcomes, errors = race(
        N,
        lambda i: task_submit(
            requester=alice, agent=agent, input=str(i), budget=BUDGET, api_key=key
        ),
    )

    assert errors == []
    assert outcomes == {"accepted": K, f"refused:{limit}": N - K}
    assert spent(key) == (K * BUDGET,) * 3
    assert Task.objects.filter(api_key=key).count() == K
    assert ApiKeyCharge.objects.filter(key=key).aggregate(s=Sum("amount"))["s"] == K * BUDGET
    with capsys.disabled():
        print(
            f"\n[api key cap] limit={limit} cap={cap} µCR N={N} k={K} "
            f"accepted={outcomes['accepted']} refused={outcomes[f'refused:{limit}']}"
        )


def test_concurrent_submissions_of_random_budgets_stop_at_the_cap_to_the_micro_credit(world):
    alice, agent = world
    cap = 1_234_567
    key, _ = api_key_create(user=alice, name="racer", scopes=["tasks:write"], limits={"daily": cap})
    budgets = [random.Random(i).randint(10_000, 200_000) for i in range(N)]

    outcomes, errors = race(
        N,
        lambda i: task_submit(
            requester=alice, agent=agent, input=str(i), budget=budgets[i], api_key=key
        ),
    )

    assert errors == []
    accepted = list(Task.objects.filter(api_key=key).values_list("budget", flat=True))
    refused = Counter(budgets) - Counter(accepted)
    assert sum(accepted) <= cap
    # Each refused budget would have overshot even at the end (the count only grew).
    assert all(sum(accepted) + budget > cap for budget in refused.elements())
    assert spent(key)[0] == sum(accepted)
    assert outcomes["accepted"] == len(accepted)


def test_submissions_and_settlements_racing_on_one_key_keep_the_counters_exact(world):
    alice, agent = world
    key, _ = api_key_create(
        user=alice, name="racer", scopes=["tasks:write"], limits={"total": 20 * BUDGET}
    )
    settled: list[Any] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for round_ in range(6):
            try:
                task = task_submit(
                    requester=alice,
                    agent=agent,
                    input=f"{index}-{round_}",
                    budget=BUDGET,
                    api_key=key,
                )
            except SpendLimitExceeded:
                continue
            if round_ % 2:  # half of them settle at once, racing the others' submissions
                claim = task_claim(task_id=task.pk)
                assert claim is not None
                done = Execution(exit_code=0, fuel_used=1_000_000)
                assert task_settle(task_id=task.pk, attempt=claim[1], execution=done)
                with lock:
                    settled.append(task.pk)

    errors = run_threads(16, worker)

    assert errors == []
    open_ = Task.objects.filter(api_key=key, status=Task.Status.QUEUED).count()
    total = len(settled) * COST + open_ * BUDGET
    assert spent(key) == (total, total, total)
    assert total <= 20 * BUDGET
    for task_id in Task.objects.filter(api_key=key, status=Task.Status.QUEUED).values_list(
        "pk", flat=True
    ):
        claim = task_claim(task_id=task_id)
        assert claim is not None
        task_settle(
            task_id=task_id, attempt=claim[1], execution=Execution(exit_code=0, fuel_used=1_000_000)
        )
    count = Task.objects.filter(api_key=key).count()
    assert spent(key) == (count * COST,) * 3


def test_concurrent_channel_openings_with_one_key_never_overshoot(world):
    alice, agent = world
    deposit = 500_000
    key, _ = api_key_create(
        user=alice, name="racer", scopes=["channels:write"], limits={"monthly": 4 * deposit}
    )

    outcomes, errors = race(
        12,
        lambda i: api_key_channel_open(
            key=key,
            requester_user_id=alice.pk,
            agent_id=agent.pk,
            payee_user_id=agent.owner_id,
            deposit=deposit,
        ),
    )

    assert errors == []
    assert outcomes == {"accepted": 4, "refused:monthly": 8}
    assert PaymentChannel.objects.count() == 4
    assert spent(key) == (4 * deposit,) * 3


def test_a_submission_the_wallet_refuses_counts_nothing_against_the_key(world):
    """The wallet binds before the key: what it refuses is rolled back with the count."""
    _, agent = world
    carol = UserFactory.create(username="carol")
    deposit_create(user_id=carol.pk, amount=3 * BUDGET)
    key, _ = api_key_create(
        user=carol, name="racer", scopes=["tasks:write"], limits={"daily": 5 * BUDGET}
    )
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def body(index: int) -> None:
        try:
            task_submit(requester=carol, agent=agent, input=str(index), budget=BUDGET, api_key=key)
            outcome = "accepted"
        except SpendLimitExceeded:
            outcome = "over the key's limit"
        except InsufficientFunds:
            outcome = "over the wallet"
        with lock:
            outcomes[outcome] += 1

    assert run_threads(N, body) == []
    assert outcomes == {"accepted": 3, "over the wallet": N - 3}
    assert spent(key) == (3 * BUDGET,) * 3
    assert ApiKeyCharge.objects.filter(key=key).count() == 3


def test_concurrent_batches_and_submissions_never_overshoot_a_limit(world):
    """Batches of 3 and single tasks racing one key whose daily limit fits 10 budgets:
    what is accepted is counted to the micro-credit, and never more than the limit."""
    from marketplace.batches import tasks_submit

    alice, agent = world
    key, _ = api_key_create(
        user=alice, name="racer", scopes=["tasks:write"], limits={"daily": K * BUDGET}
    )
    one = {"agent": agent, "input": "hi", "budget": BUDGET}

    def attempt(index: int) -> None:
        if index % 2:
            task_submit(requester=alice, api_key=key, **one)
        else:
            tasks_submit(requester=alice, submissions=[one] * 3, api_key=key)

    outcomes, errors = race(16, attempt)
    assert errors == []
    accepted = Task.objects.filter(api_key=key).count()
    assert 1 <= accepted <= K
    assert spent(key) == (accepted * BUDGET,) * 3
    assert ApiKeyCharge.objects.filter(key=key).aggregate(Sum("amount"))["amount__sum"] == (
        accepted * BUDGET
    )
    assert sum(outcomes.values()) == 16 and outcomes["refused:daily"] >= 1
