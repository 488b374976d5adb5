"""The ledger against a simple in-memory model, under random sequences of operations."""

from __future__ import annotations

import itertools

from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from escrow.audit import ledger_audit
from escrow.errors import EscrowStateError, IdempotencyConflict, InsufficientFunds
from escrow.models import Account
from escrow.services import (
    deposit_create,
    escrow_cancel,
    escrow_create,
    escrow_fund,
    escrow_refund,
    escrow_release,
)
from escrow.system_accounts import system_balance
from marketplace.services import user_create

_names = itertools.count()
AMOUNTS = st.integers(min_value=1, max_value=5_000_000)
SYSTEM = ("external", "escrow", "platform_fees")


class LedgerMachine(RuleBasedStateMachine):
    escrows = Bundle("escrows")

    def __init__(self) -> None:
        super().__init__()
        # Each run gets fresh users; system accounts are shared, so the model tracks
        # their change from the balance seen at the start.
        self.users = [user_create(username=f"m{next(_names)}") for _ in range(3)]
        self.wallet = {u.pk: 0 for u in self.users}
        self.system_start = {k: self._system(k) for k in SYSTEM}
        self.system = dict.fromkeys(SYSTEM, 0)
        self.escrow_state: dict[int, tuple[str, int, int, int]] = {}
        self.keys: dict[tuple[int, str], int] = {}

    def _system(self, kind: str) -> int:
        return system_balance(kind)

    users_index = st.integers(min_value=0, max_value=2)

    @rule(who=users_index, amount=AMOUNTS, key=st.sampled_from([None, "a", "b"]))
    def deposit(self, who, amount, key):
        user = self.users[who]
        seen = self.keys.get((user.pk, key)) if key else None
        if seen is not None and seen != amount:
            try:
                deposit_create(user_id=user.pk, amount=amount, idempotency_key=key)
            except IdempotencyConflict:
                return
            raise AssertionError("a reused key with another amount was accepted")
        deposit_create(user_id=user.pk, amount=amount, idempotency_key=key)
        if seen is None:
            if key:
                self.keys[(user.pk, key)] = amount
            self.wallet[user.pk] += amount
            self.system["external"] -= amount

    @rule(target=escrows, payer=users_index, payee=users_index, amount=AMOUNTS)
    def create(self, payer, payee, amount):
        escrow = escrow_create(
            payer_user_id=self.users[payer].pk, payee_user_id=self.users[payee].pk, amount=amount
        )
        self.escrow_state[escrow.pk] = (
            "pending",
            self.users[payer].pk,
            self.users[payee].pk,
            amount,
        )
        return escrow.pk

    def _expect(self, escrow_id, wanted, action):
        status = self.escrow_state[escrow_id][0]
        if status != wanted:
            try:
                action()
            except EscrowStateError:
                return False
            raise AssertionError(f"a {status} escrow accepted an operation for {wanted}")
        return True

    @rule(escrow_id=escrows)
    def fund(self, escrow_id):
        _, payer, payee, amount = self.escrow_state[escrow_id]
        if not self._expect(escrow_id, "pending", lambda: escrow_fund(escrow_id=escrow_id)):
            return
        if self.wallet[payer] < amount:
            try:
                escrow_fund(escrow_id=escrow_id)
            except InsufficientFunds:
                return
            raise AssertionError("an escrow was funded beyond the wallet balance")
        escrow_fund(escrow_id=escrow_id)
        self.wallet[payer] -= amount
        self.system["escrow"] += amount
        self.escrow_state[escrow_id] = ("funded", payer, payee, amount)

    @rule(escrow_id=escrows, share=st.floats(0, 1), fee_bps=st.integers(0, 10_000))
    def release(self, escrow_id, share, fee_bps):
        _, payer, payee, amount = self.escrow_state[escrow_id]
        cost = int(amount * share)
        fee = cost * fee_bps // 10_000
        action = lambda: escrow_release(escrow_id=escrow_id, cost=cost, fee=fee)  # noqa: E731
        if not self._expect(escrow_id, "funded", action):
            return
        action()
        self.system["escrow"] -= amount
        self.wallet[payee] += cost - fee
        self.system["platform_fees"] += fee
        self.wallet[payer] += amount - cost
        self.escrow_state[escrow_id] = ("released", payer, payee, amount)

    @rule(escrow_id=escrows)
    def refund(self, escrow_id):
        _, payer, payee, amount = self.escrow_state[escrow_id]
        if not self._expect(escrow_id, "funded", lambda: escrow_refund(escrow_id=escrow_id)):
            return
        escrow_refund(escrow_id=escrow_id)
        self.system["escrow"] -= amount
        self.wallet[payer] += amount
        self.escrow_state[escrow_id] = ("refunded", payer, payee, amount)

    @rule(escrow_id=escrows)
    def cancel(self, escrow_id):
        _, payer, payee, amount = self.escrow_state[escrow_id]
        if not self._expect(escrow_id, "pending", lambda: escrow_cancel(escrow_id=escrow_id)):
            return
        escrow_cancel(escrow_id=escrow_id)
        self.escrow_state[escrow_id] = ("cancelled", payer, payee, amount)

    @invariant()
    def balances_match_the_model(self):
        for user in self.users:
            assert Account.objects.get(user=user).balance == self.wallet[user.pk]
        for kind in SYSTEM:
            assert self._system(kind) == self.system_start[kind] + self.system[kind]

    @invariant()
    def money_is_neither_created_nor_destroyed(self):
        assert Account.objects.aggregate(total=Sum("balance"))["total"] == 0
        assert not Account.objects.exclude(kind="external").filter(balance__lt=0).exists()

    def teardown(self):
        report = ledger_audit()
        assert report.ok, report.violations


def test_ledger_matches_a_simple_model(db):
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
