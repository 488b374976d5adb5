"""Real transactions on real PostgreSQL, from real threads (each with its own connection)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import OperationalError

from escrow.audit import ledger_audit
from escrow.errors import EscrowStateError, InsufficientFunds
from escrow.ledger import wallet_id
from escrow.models import Escrow, Transfer
from escrow.services import (
    deposit_create,
    escrow_cancel,
    escrow_create,
    escrow_fund,
    escrow_refund,
    escrow_release,
    transfer_create,
)
from marketplace.services import user_create
from tests.concurrency import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 8
OPERATIONS = 200


def test_random_concurrent_operations_keep_every_invariant(capsys):
    users = [user_create(username=f"u{i}") for i in range(6)]
    for user in users:
        deposit_create(user_id=user.pk, amount=50_000_000)
    escrow_ids = []
    for i in range(300):
        payer, payee = users[i % 6], users[(i + 1) % 6]
        escrow_ids.append(
            escrow_create(payer_user_id=payer.pk, payee_user_id=payee.pk, amount=1_000_000 + i).pk
        )

    wins: Counter[tuple[int, str]] = Counter()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(index)
        for _ in range(OPERATIONS):
            escrow_id = rng.choice(escrow_ids)
            op = rng.choice(["deposit", "transfer", "fund", "fund", "release", "refund", "cancel"])
            try:
                if op == "deposit":
                    deposit_create(user_id=rng.choice(users).pk, amount=rng.randint(1, 10_000))
                elif op == "transfer":
                    a, b = rng.sample(users, 2)
                    transfer_create(
                        debit_account_id=wallet_id(user_id=a.pk),
                        credit_account_id=wallet_id(user_id=b.pk),
                        amount=rng.randint(1, 2_000_000),
                        kind=Transfer.Kind.DEPOSIT,
                    )
                elif op == "fund":
                    escrow_fund(escrow_id=escrow_id)
                elif op == "release":
                    cost = rng.randint(0, 1_000_000)
                    escrow_release(escrow_id=escrow_id, cost=cost, fee=cost // 20)
                elif op == "refund":
                    escrow_refund(escrow_id=escrow_id)
                else:
                    escrow_cancel(escrow_id=escrow_id)
            except (EscrowStateError, InsufficientFunds) as exc:
                with lock:
                    outcomes[type(exc).__name__] += 1
                continue
            with lock:
                outcomes[op] += 1
                if op in ("release", "refund", "cancel", "fund"):
                    wins[(escrow_id, op)] += 1

    started = time.monotonic()
    errors = run_threads(WORKERS, worker)
    elapsed = time.monotonic() - started

    deadlocks = [e for e in errors if isinstance(e, OperationalError) and "deadlock" in str(e)]
    assert not deadlocks, f"{len(deadlocks)} deadlocks"
    assert not errors, errors[:3]
    assert all(count == 1 for count in wins.values()), "an escrow changed state twice"
    resolved_per_escrow = Counter(eid for (eid, op) in wins if op != "fund")
    assert max(resolved_per_escrow.values(), default=0) <= 1
    for escrow in Escrow.objects.filter(pk__in=escrow_ids):
        resolved = {op for (eid, op) in wins if eid == escrow.pk and op != "fund"}
        expected = {"released": {"release"}, "refunded": {"refund"}, "cancelled": {"cancel"}}
        assert resolved == expected.get(escrow.status, set())
    report = ledger_audit()
    assert report.ok, report.violations
    total = WORKERS * OPERATIONS
    assert sum(outcomes.values()) == total
    with capsys.disabled():
        print(
            f"\n  ledger concurrency: {WORKERS} threads x {OPERATIONS} ops = {total} ops in "
            f"{elapsed:.2f}s -> {total / elapsed:.0f} ops/s; outcomes {dict(outcomes)}"
        )


def test_twenty_concurrent_deposits_with_one_key_make_one_transfer():
    alice = user_create(username="alice")
    results = []

    def deposit(_index: int) -> None:
        results.append(
            deposit_create(user_id=alice.pk, amount=5_000, idempotency_key="same-key").pk
        )

    errors = run_threads(20, deposit)
    assert not errors, errors[:3]
    assert len(results) == 20 and len(set(results)) == 1
    assert Transfer.objects.filter(kind="deposit").count() == 1
    assert alice.wallet.__class__.objects.get(user=alice).balance == 5_000


def test_twenty_concurrent_releases_of_one_escrow_pay_once():
    alice, bob = user_create(username="alice"), user_create(username="bob")
    deposit_create(user_id=alice.pk, amount=1_000)
    escrow = escrow_create(payer_user_id=alice.pk, payee_user_id=bob.pk, amount=1_000)
    escrow_fund(escrow_id=escrow.pk)
    won = []

    def settle(index: int) -> None:
        try:
            if index % 2:
                escrow_release(escrow_id=escrow.pk, cost=600, fee=30)
            else:
                escrow_refund(escrow_id=escrow.pk)
            won.append(index)
        except EscrowStateError:
            pass

    errors = run_threads(20, settle)
    assert not errors, errors[:3]
    assert len(won) == 1
    escrow.refresh_from_db()
    paid = Transfer.objects.filter(escrow=escrow).exclude(kind="escrow_hold")
    if won[0] % 2:
        assert escrow.status == "released"
        assert sorted(paid.values_list("kind", "amount")) == [
            ("escrow_fee", 30),
            ("escrow_payout", 570),
            ("escrow_refund", 400),
        ]
    else:
        assert escrow.status == "refunded"
        assert list(paid.values_list("kind", "amount")) == [("escrow_refund", 1_000)]
