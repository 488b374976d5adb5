"""The ledger audit reads one snapshot, so money moving while it runs is never drift."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connections, transaction

from escrow.audit import _audit, ledger_audit
from escrow.errors import EscrowStateError, InsufficientFunds
from escrow.ledger import wallet_id
from escrow.models import Transfer
from escrow.services import (
    deposit_create,
    escrow_create,
    escrow_fund,
    escrow_release,
    transfer_create,
)
from marketplace.services import user_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MOVERS = 4
SECONDS = 3.0


def read_committed_audit():
    """How the audit read before: one transaction, but each query its own snapshot."""
    with transaction.atomic():
        return _audit()


def audits_while_money_moves(audit) -> Counter[str]:
    users = [user_create(username=f"u{i}") for i in range(4)]
    for user in users:
        deposit_create(user_id=user.pk, amount=10_000_000)
    stop = threading.Event()
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def move(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            a, b = rng.sample(users, 2)
            try:
                deposit_create(user_id=a.pk, amount=rng.randint(1, 1_000))
                transfer_create(
                    debit_account_id=wallet_id(user_id=a.pk),
                    credit_account_id=wallet_id(user_id=b.pk),
                    amount=rng.randint(1, 1_000),
                    kind=Transfer.Kind.DEPOSIT,
                )
                escrow = escrow_create(payer_user_id=a.pk, payee_user_id=b.pk, amount=1_000)
                escrow_fund(escrow_id=escrow.pk)
                escrow_release(escrow_id=escrow.pk, cost=500, fee=25)
            except (EscrowStateError, InsufficientFunds):
                continue

    def check() -> None:
        while not stop.is_set():
            report = audit()
            with lock:
                counts["audits"] += 1
                counts["drifted"] += not report.ok

    def guarded(target, *args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # reported by the test
            failures.append(exc)
            stop.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=guarded, args=(move, i)) for i in range(MOVERS)]
    threads.append(threading.Thread(target=guarded, args=(check,)))
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:3]
    assert ledger_audit().ok  # at rest, both ways agree
    return counts


def test_the_audit_never_reports_drift_while_money_moves(capsys):
    counts = audits_while_money_moves(ledger_audit)

    with capsys.disabled():
        print(f"\n  audit under load (one snapshot): {dict(counts)}")
    assert counts["audits"] >= 5
    assert counts["drifted"] == 0


def test_read_committed_the_audit_would_report_drift_under_the_same_load(capsys):
    """The contrast: without the snapshot, money moving between two of the audit's queries
    shows as drift. Proves the test above can fail."""
    counts = audits_while_money_moves(read_committed_audit)

    with capsys.disabled():
        print(f"\n  audit under load (a snapshot per query): {dict(counts)}")
    assert counts["drifted"] > 0
