"""Evaluated settlement of channel-paid tasks (SPEC §21, §8): the voucher covers the budget,
the budget covers both runs. The task's settlement redeems its cost on the channel and draws
the budget's rest from the deposit into its evaluator's run; the task stays in flight on its
channel until the verdict; a rejection takes its cost off what the channel redeemed.

Exact balances of the requester's wallet, the channel, both owners' earnings and the
platform's fees on each verdict, with the channel settling before or after it; the API
keys' spending; the next voucher; recovery of a verdict whose worker died. The audits
(ledger, evaluation, channels, reputation) run after each test (tests/conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db.models import Q

from escrow.channels import channel_close, key_register
from escrow.disputes import DisputeWindowClosed
from escrow.errors import VoucherInsufficient
from escrow.models import Earning, Escrow, PaymentChannel, Transfer
from escrow.services import deposit_create
from escrow.system_accounts import system_balance
from execution.evaluation import evaluation_decide, evaluations_recover
from execution.runs import Execution
from execution.services import task_claim, task_settle
from marketplace.apikey_models import ApiKey
from marketplace.apikeys.lifecycle import api_key_create
from marketplace.apikeys.spending import api_key_channel_open, api_keys_settle_channels
from marketplace.disputes import dispute_accept, dispute_file
from marketplace.models import Evaluation, Task
from marketplace.selectors.wallet import wallet_summary
from marketplace.services import task_submit
from reputation.models import ReputationEvent
from tests.factories import KEY, balance, channel_opened, held_for, make_agent, paid_by, public
from tests.test_evaluation import judged

pytestmark = pytest.mark.postgres

START, DEPOSIT, BUDGET = 10_000_000, 1_000_000, 100_000
COST, FEE = 3_470, 173  # the task's run (tests.factories.RUN)
JUDGE_COST, JUDGE_FEE = 1_500, 75  # the judge's run: 500 µCR + 1e6 fuel at 1_000 µCR/M
REST = BUDGET - COST  # drawn from the channel for the judge's run


def verdict(accept: bool) -> bytes:
    return json.dumps({"accept": accept, "score": 0.5, "reason": "checked"}).encode()


ACCEPT, REJECT = judged(verdict(True)), judged(verdict(False))
FAILED = judged(b"", reason="timeout", exit_code=None)


@pytest.fixture
def channel(requester, evaluated_agent, bob) -> PaymentChannel:
    return channel_opened(requester, evaluated_agent, bob, deposit=DEPOSIT)


def settled_on(channel, requester, agent, nonce: int = 1, **options: Any) -> Task:
    """An evaluated task paid through the channel (a voucher for `nonce` budgets in all),
    claimed and settled as a success."""
    task = task_submit(
        requester=requester,
        agent=agent,
        input="hi",
        budget=BUDGET,
        evaluator="judge",
        **paid_by(channel, nonce, BUDGET * nonce),
        **options,
    )
    assert task_claim(task_id=task.pk) is not None
    assert task_settle(task_id=task.pk, attempt=1, execution=judged(b"ok", fuel_used=1_234_567))
    return Task.objects.get(pk=task.pk)


def run_of(task: Task) -> Task:
    return Task.objects.get(evaluates=task)


def evaluate(task: Task, execution: Execution, *, decide: bool = True) -> Evaluation:
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    assert task_settle(task_id=run.pk, attempt=1, execution=execution)
    if decide:
        assert evaluation_decide(run_id=run.pk)
    return Evaluation.objects.get(task=task)


def state(channel: PaymentChannel) -> tuple[str, int, int, int, int, int]:
    channel.refresh_from_db()
    return (
        channel.status,
        channel.redeemed,
        channel.fees,
        channel.drawn,
        channel.reserved,
        channel.in_flight,
    )


def close(channel: PaymentChannel, requester) -> None:
    channel_close(channel_id=channel.pk, by_user_id=requester.pk)


def lines(task: Task, channel: PaymentChannel) -> list[tuple[str, str, str, int]]:
    """The ledger lines of the task, of its evaluator's run and of its channel."""
    found = Transfer.objects.filter(
        Q(task__in=[task.pk, run_of(task).pk]) | Q(channel=channel) | Q(escrow__task=run_of(task))
    ).select_related("debit_account", "credit_account")
    return [
        (t.kind, _name(t.debit_account), _name(t.credit_account), t.amount)
        for t in found.order_by("id")
    ]


def _name(account: Any) -> str:
    return f"{account.user.username}'s wallet" if account.user_id else account.kind


def show(title: str, task: Task, channel: PaymentChannel) -> None:
    print(f"\n{title}, ledger lines:")
    for kind, debit, credit, amount in lines(task, channel):
        print(f"   {kind:<22} {debit:>15} → {credit:<15} {amount:>9} µCR")


# --- the settlement and each verdict ---------------------------------------------------------


def test_the_settlement_redeems_the_cost_and_draws_the_rest_for_the_evaluator(
    requester, evaluated_agent, channel
):
    task = settled_on(channel, requester, evaluated_agent)
    assert (task.status, task.cost, task.fee) == ("succeeded", COST, FEE)
    # Redeemed, drawn for the evaluator, and still in flight until the verdict.
    assert state(channel) == ("open", COST, FEE, REST, 0, 1)
    run = run_of(task)
    assert (run.status, run.budget, run.payment) == ("queued", REST, "escrow")
    escrow = Escrow.objects.get(task=run)
    assert (escrow.status, escrow.amount, escrow.channel_id) == ("funded", REST, None)
    hold = Transfer.objects.get(task=run)
    assert (hold.kind, hold.amount, hold.memo) == (
        "escrow_hold",
        REST,
        f"drawn from channel {channel.pk} for the evaluator's run",
    )
    assert (hold.debit_account.kind, hold.credit_account.kind) == ("channels", "escrow")
    assert balance(requester) == START - DEPOSIT  # nothing of the wallet's is touched
    summary = wallet_summary(requester)  # the rest is counted once: in the run's escrow
    assert (summary.in_channels, summary.held_in_escrow) == (DEPOSIT - REST, REST)
    assert not Earning.objects.filter(task=task).exists()  # the channel has not paid out
    assert Evaluation.objects.get(task=task).status == "running"
    # A closing channel waits for the verdict: the task is still in flight.
    close(channel, requester)
    assert state(channel) == ("closing", COST, FEE, REST, 0, 1)


def test_accept_pays_both_owners_exactly(requester, evaluated_agent, channel, bob, charlie):
    task = settled_on(channel, requester, evaluated_agent)
    evaluation = evaluate(task, ACCEPT)
    assert (evaluation.verdict, evaluation.cost, evaluation.fee) == (
        "accept",
        JUDGE_COST,
        JUDGE_FEE,
    )
    assert evaluation.refund == REST - JUDGE_COST
    assert state(channel) == ("open", COST, FEE, REST, 0, 0)
    # The run's refund is back in the wallet; the judge's share is held for charlie.
    assert balance(requester) == START - DEPOSIT + REST - JUDGE_COST
    assert held_for(charlie) == JUDGE_COST - JUDGE_FEE
    assert ReputationEvent.objects.get(task=task).outcome == "success"

    close(channel, requester)
    assert state(channel) == ("settled", COST, FEE, REST, 0, 0)
    assert balance(requester) == START - COST - JUDGE_COST
    assert held_for(bob) == COST - FEE
    assert Earning.objects.get(task=task).status == "held"
    assert system_balance("platform_fees") == FEE + JUDGE_FEE
    assert system_balance("channels") == system_balance("escrow") == 0
    show("accepted channel-paid evaluated task", task, channel)


def test_reject_takes_the_cost_off_the_channel(requester, evaluated_agent, channel, bob, charlie):
    task = settled_on(channel, requester, evaluated_agent)
    close(channel, requester)  # closing before the verdict: it settles with the verdict
    evaluation = evaluate(task, REJECT)
    assert (evaluation.verdict, evaluation.cost) == ("reject", JUDGE_COST)
    # As an accepted dispute on an open channel: its cost and fee off what it redeemed.
    assert state(channel) == ("settled", 0, 0, REST, 0, 0)
    assert Escrow.objects.filter(task=task).values_list("cost", "fee").get() == (0, 0)
    assert Task.objects.get(pk=task.pk).cost == COST  # the task's cost stays the agent's own
    assert balance(requester) == START - JUDGE_COST
    assert (held_for(bob), held_for(charlie)) == (0, JUDGE_COST - JUDGE_FEE)
    assert not Earning.objects.filter(task=task).exists()
    assert system_balance("platform_fees") == JUDGE_FEE
    assert system_balance("channels") == system_balance("escrow") == 0
    event = ReputationEvent.objects.get(task=task)
    assert (event.outcome, event.reason) == ("failure", "evaluator_rejected")
    show("rejected channel-paid evaluated task", task, channel)


def test_a_failed_evaluator_counts_as_accept_with_its_run_refunded(
    requester, evaluated_agent, channel, bob, charlie
):
    task = settled_on(channel, requester, evaluated_agent)
    evaluation = evaluate(task, FAILED)
    assert (evaluation.verdict, evaluation.reason, evaluation.cost) == (
        "accept",
        "evaluator_failed",
        0,
    )
    assert evaluation.refund == REST
    assert balance(requester) == START - DEPOSIT + REST
    close(channel, requester)
    assert state(channel) == ("settled", COST, FEE, REST, 0, 0)
    assert balance(requester) == START - COST
    assert (held_for(bob), held_for(charlie)) == (COST - FEE, 0)
    assert system_balance("platform_fees") == FEE
    assert ReputationEvent.objects.get(task=task).outcome == "success"


def test_nothing_left_for_the_evaluator_leaves_the_flight_at_the_settlement(
    requester, bob, charlie
):
    # Free fuel on both sides and a budget of exactly the agent's base fee: nothing to draw.
    agent = make_agent(bob, slug="flat", base_fee=1_000, fuel_price=0)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=0, fuel_price=0))
    channel = channel_opened(requester, agent, bob, deposit=DEPOSIT)
    task = task_submit(
        requester=requester,
        agent=agent,
        input="hi",
        budget=1_000,
        evaluator="judge",
        **paid_by(channel, 1, 1_000),
    )
    assert task_claim(task_id=task.pk) is not None
    assert task_settle(task_id=task.pk, attempt=1, execution=judged(b"ok"))
    assert not Task.objects.filter(evaluates=task).exists()
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason) == ("accept", "evaluator_failed")
    assert state(channel) == ("open", 1_000, 50, 0, 0, 0)
    close(channel, requester)
    assert balance(requester) == START - 1_000
    assert held_for(bob) == 1_000 - 50


@pytest.mark.parametrize("settle_first", [False, True], ids=["open", "settled"])
def test_a_dispute_after_an_accept_refunds_the_cost_once(
    requester, evaluated_agent, channel, bob, charlie, settle_first
):
    task = settled_on(channel, requester, evaluated_agent)
    with pytest.raises(DisputeWindowClosed):  # not before the verdict
        dispute_file(task_id=task.pk, user=requester, reason="wrong")
    evaluate(task, ACCEPT)
    if settle_first:
        close(channel, requester)
    dispute = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    assert dispute_accept(dispute_id=dispute.pk, user=bob).refunded == COST
    if not settle_first:
        close(channel, requester)
    assert balance(requester) == START - JUDGE_COST
    assert (held_for(bob), held_for(charlie)) == (0, JUDGE_COST - JUDGE_FEE)
    assert system_balance("platform_fees") == JUDGE_FEE
    # The evaluator's accept was overturned: scored once, as a failure.
    assert Evaluation.objects.get(task=task).upheld is False


def test_recovery_decides_a_verdict_whose_worker_died_exactly_once(
    requester, evaluated_agent, channel
):
    task = settled_on(channel, requester, evaluated_agent)
    close(channel, requester)
    evaluate(task, REJECT, decide=False)  # the run settled; its worker died before the verdict
    assert state(channel) == ("closing", COST, FEE, REST, 0, 1)
    assert evaluations_recover() == {"decided": 1, "errors": 0}
    assert evaluations_recover() == {"decided": 0, "errors": 0}
    assert not evaluation_decide(run_id=run_of(task).pk)
    assert state(channel) == ("settled", 0, 0, REST, 0, 0)
    assert balance(requester) == START - JUDGE_COST


def test_the_next_voucher_covers_what_was_drawn(requester, evaluated_agent, channel):
    settled_on(channel, requester, evaluated_agent)
    # Redeemed (COST) + drawn (REST) = the first budget: a voucher for only the redeemed
    # amount plus the next budget is short by what the evaluator's run took.
    with pytest.raises(VoucherInsufficient):
        task_submit(
            requester=requester,
            agent=evaluated_agent,
            input="hi",
            budget=BUDGET,
            **paid_by(channel, 2, COST + BUDGET),
        )
    second = settled_on(channel, requester, evaluated_agent, nonce=2)
    evaluate(second, ACCEPT)
    evaluate(Task.objects.filter(evaluator__isnull=False).exclude(pk=second.pk).get(), ACCEPT)
    close(channel, requester)
    assert state(channel) == ("settled", 2 * COST, 2 * FEE, 2 * REST, 0, 0)
    assert balance(requester) == START - 2 * (COST + JUDGE_COST)


# --- API keys ---------------------------------------------------------------------------------


def spent(key: ApiKey) -> int:
    return ApiKey.objects.values_list("spent_total", flat=True).get(pk=key.pk)


@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
def test_a_keys_task_on_a_channel_spends_exactly_what_it_paid(
    requester, evaluated_agent, channel, accept
):
    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write"])
    task = settled_on(channel, requester, evaluated_agent, api_key=key)
    assert spent(key) == BUDGET  # the rest pays the evaluator: given back at the verdict
    evaluate(task, ACCEPT if accept else REJECT)
    paid = (COST if accept else 0) + JUDGE_COST
    assert spent(key) == paid
    close(channel, requester)
    api_keys_settle_channels(user=requester)
    assert spent(key) == paid
    assert balance(requester) == START - paid


@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
@pytest.mark.parametrize("keys_task", [False, True], ids=["session-task", "keys-task"])
def test_a_channel_a_key_opened_gives_back_all_but_both_costs(
    requester, evaluated_agent, bob, accept, keys_task
):
    key, _ = api_key_create(user=requester, name="opener", scopes=["tasks:write", "channels:write"])
    key_register(user_id=requester.pk, public_key=public(KEY))
    channel = api_key_channel_open(
        key=key,
        requester_user_id=requester.pk,
        agent_id=evaluated_agent.pk,
        payee_user_id=bob.pk,
        deposit=DEPOSIT,
    )
    task = settled_on(channel, requester, evaluated_agent, api_key=key if keys_task else None)
    evaluate(task, ACCEPT if accept else REJECT)
    assert spent(key) == DEPOSIT  # given back when the channel has settled
    close(channel, requester)
    api_keys_settle_channels(user=requester)
    paid = (COST if accept else 0) + JUDGE_COST
    assert spent(key) == paid
    assert balance(requester) == START - paid


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_verdicts_settlements_and_a_close_racing_on_one_channel_add_up():
    """Evaluators' runs settling and deciding (accept and reject alternately), the channel's
    other tasks settling and the channel closing, all at once: every verdict decided once,
    the channel settled with nothing in flight, every balance exact."""
    from tests.concurrency import run_threads
    from tests.factories import UserFactory

    alice, bob, charlie = (UserFactory.create(username=name) for name in ("a", "b", "c"))
    deposit_create(user_id=alice.pk, amount=START)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    channel = channel_opened(alice, agent, bob, deposit=DEPOSIT)
    evaluated = [settled_on(channel, alice, agent, nonce=n) for n in range(1, 5)]
    plain = [
        task_submit(
            requester=alice,
            agent=agent,
            input="hi",
            budget=BUDGET,
            **paid_by(channel, n, BUDGET * n),
        )
        for n in range(5, 9)
    ]

    def work(index: int) -> None:
        if index < len(evaluated):
            evaluate(evaluated[index], ACCEPT if index % 2 == 0 else REJECT)
        elif index < len(evaluated) + len(plain):
            task = plain[index - len(evaluated)]
            assert task_claim(task_id=task.pk) is not None
            assert task_settle(
                task_id=task.pk, attempt=1, execution=judged(b"ok", fuel_used=1_234_567)
            )
        else:
            close(channel, alice)

    assert run_threads(len(evaluated) + len(plain) + 1, work) == []
    assert evaluations_recover() == {"decided": 0, "errors": 0}
    assert state(channel) == ("settled", 6 * COST, 6 * FEE, 4 * REST, 0, 0)
    assert balance(alice) == START - 6 * COST - 4 * JUDGE_COST
    assert (held_for(bob), held_for(charlie)) == (6 * (COST - FEE), 4 * (JUDGE_COST - JUDGE_FEE))
    assert system_balance("platform_fees") == 6 * FEE + 4 * JUDGE_FEE
