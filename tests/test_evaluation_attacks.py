"""Evaluated settlement under attack (SPEC §21): every way we tried to make a µCR be lost,
created, paid twice or left stuck, or an agent's or evaluator's reputation be griefed,
through escrow-paid evaluated tasks. Each test is one attack and what stopped it.

Runs are replaced by the `Execution` they would produce (tests/test_evaluation.py's helpers);
the races run in real threads on PostgreSQL. The ledger and reputation audits run after each
test (tests/conftest.py).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from escrow.models import Dispute, Earning
from escrow.services import deposit_create
from execution.evaluation import evaluation_decide, evaluations_recover
from execution.services import task_claim, task_refund, task_settle, tasks_recover
from marketplace.errors import TaskStateConflict
from marketplace.models import Evaluation, Task
from marketplace.services import task_submit
from reputation.models import AgentReputation, ReputationEvent
from tests.concurrency import run_threads
from tests.factories import UserFactory, balance, held_for, make_agent
from tests.test_evaluation import (
    BUDGET,
    COST,
    FEE,
    JUDGE_COST,
    JUDGE_FEE,
    evaluate,
    judged,
    run_of,
    succeed,
    verdict,
)

FUNDS = 10_000_000


def submit(requester, agent, **options) -> Task:
    options.setdefault("evaluator", "judge")
    return task_submit(requester=requester, agent=agent, input="hi", budget=BUDGET, **options)


def settle_run(task: Task, stdout: bytes) -> Task:
    """The evaluator's run claimed and settled with `stdout`, its verdict not decided yet."""
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    assert task_settle(task_id=run.pk, attempt=1, execution=judged(stdout))
    return run


# --- what the evaluator prints -------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [pytest.param("bad\u0000answer", id="nul"), pytest.param("bad\ud800answer", id="surrogate")],
)
def test_a_reason_the_database_cannot_store_does_not_hold_the_money_hostage(
    requester, evaluated_agent, bob, charlie, reason
):
    """Attack: the evaluator prints a well-formed verdict whose reason holds a NUL (or a lone
    surrogate, "\\ud800" in its JSON): text PostgreSQL can't store. If the verdict could not
    be written, the task's earnings would wait (`evaluating`) for ever, undisputable."""
    import json

    task = succeed(submit(requester, evaluated_agent))
    printed = json.dumps({"accept": False, "score": 0.1, "reason": reason}).encode()
    run = settle_run(task, printed)
    assert evaluation_decide(run_id=run.pk)
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.status, evaluation.verdict) == ("decided", "reject")
    assert evaluation.reason == "bad\ufffdanswer"
    assert balance(requester) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE
    assert Earning.objects.get(task=task).status == "refunded"


# --- reputation ----------------------------------------------------------------------------


def test_an_agents_owner_cannot_grief_the_evaluator_by_disputing_its_own_task(bob, judge):
    """Attack: bob owns the agent, submits a task to it himself naming charlie's judge, the
    judge accepts, bob disputes and (as the owner) accepts his own dispute: the verdict
    'overturned' by the one person who both asked and answered. Scoring that would let any
    agent owner sink an evaluator's score for the price of its run."""
    from marketplace.disputes import dispute_accept, dispute_file

    deposit_create(user_id=bob.pk, amount=FUNDS)
    own = make_agent(bob, slug="mine")
    own.accepted_evaluators.add(judge)
    task = succeed(submit(bob, own))
    evaluate(task, judged(verdict(True)))
    before = AgentReputation.objects.get(agent=judge).score
    dispute = dispute_file(task_id=task.pk, user=bob, reason="my own task")
    dispute_accept(dispute_id=dispute.pk, user=bob)
    event = ReputationEvent.objects.get(agent=judge, reason="verdict_overturned")
    assert (event.outcome, event.neutral_reason, event.delta) == (
        "neutral",
        "self_dealing",
        Decimal(0),
    )
    assert AgentReputation.objects.get(agent=judge).score == before
    # bob paid his own agent and got it back; the judge's run stays paid.
    assert balance(bob) == FUNDS - JUDGE_COST


# --- two verdicts, and the verdict racing what else moves the task's money -----------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
def test_workers_and_recoveries_deciding_one_verdict_at_once_settle_it_once(accept):
    """Attack: the live worker's verdict, a second delivery of it and two recoveries decide
    the same evaluation at the same moment, each in its own transaction (two verdicts would
    pay the earnings twice, or refund the cost twice)."""
    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    task = succeed(submit(alice, agent))
    run = settle_run(task, verdict(accept))
    won: list[bool] = []
    lock = threading.Lock()

    def body(index: int) -> None:
        done = evaluation_decide(run_id=run.pk) if index < 2 else evaluations_recover()["decided"]
        with lock:
            won.append(bool(done))

    assert run_threads(4, body) == []
    assert sorted(won) == [False, False, False, True]
    paid = COST + JUDGE_COST if accept else JUDGE_COST
    assert balance(alice) == FUNDS - paid
    assert held_for(bob) == (COST - FEE if accept else 0)
    assert held_for(charlie) == JUDGE_COST - JUDGE_FEE
    assert ReputationEvent.objects.filter(task=task).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
def test_disputes_filed_while_the_verdict_lands_freeze_only_an_accepted_held_earning(accept):
    """Attack: the requester files disputes at the very moment the verdict is decided, hoping
    one slips in while the earning still waits (`evaluating`): a dispute on money the
    verdict then also moves, or a refund on top of a rejection's."""
    from escrow.disputes import DisputeAlreadyOpen, DisputeWindowClosed
    from marketplace.disputes import dispute_accept, dispute_file

    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    task = succeed(submit(alice, agent))
    run = settle_run(task, verdict(accept))
    refused: list[str] = []
    lock = threading.Lock()

    def body(index: int) -> None:
        if index == 0:
            assert evaluation_decide(run_id=run.pk)
            return
        for _ in range(20):
            try:
                dispute_file(task_id=task.pk, user=alice, reason="race")
                return
            except (DisputeWindowClosed, DisputeAlreadyOpen) as exc:
                with lock:
                    refused.append(exc.code)

    assert run_threads(4, body) == []
    earning = Earning.objects.get(task=task)
    disputes = list(Dispute.objects.filter(task=task))
    if accept:
        assert len(disputes) == 1 and earning.status == "frozen"
        dispute_accept(dispute_id=disputes[0].pk, user=bob)
        assert Earning.objects.get(task=task).status == "refunded"
    else:
        assert disputes == [] and earning.status == "refunded"
    # Either way the task's cost came back exactly once; the judge's run stays paid.
    assert balance(alice) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_earnings_sweep_racing_an_accept_pays_the_share_once(settings):
    """Attack: with no hold (EARNINGS_HOLD_SECONDS = 0) an accept makes the earning due at
    once; sweeps running while the verdict lands must neither pay a share still waiting
    for its verdict nor pay it twice."""
    from escrow.earnings import earnings_release_due

    settings.EARNINGS_HOLD_SECONDS = 0
    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    task = succeed(submit(alice, agent))
    # Even long past any hold, a share waiting for its verdict is not swept.
    assert earnings_release_due(now=timezone.now() + timedelta(days=365)) == 0
    run = settle_run(task, verdict(True))

    def body(index: int) -> None:
        if index == 0:
            assert evaluation_decide(run_id=run.pk)
        else:
            for _ in range(10):
                earnings_release_due(now=timezone.now() + timedelta(seconds=1))

    assert run_threads(4, body) == []
    earnings_release_due(now=timezone.now() + timedelta(seconds=1))
    assert Earning.objects.get(task=task).status == "released"
    assert balance(bob) == COST - FEE  # once
    assert balance(charlie) == JUDGE_COST - JUDGE_FEE  # no hold: the judge's run paid out
    assert balance(alice) == FUNDS - COST - JUDGE_COST


# --- operators, cancellation, deadlines ----------------------------------------------------


def test_an_operator_cannot_refund_a_task_waiting_for_its_verdict(requester, evaluated_agent):
    """Attack: an operator's refund of the evaluated task after it succeeded (its verdict
    pending) would give the cost back while its earning waits to be paid."""
    task = succeed(submit(requester, evaluated_agent))
    with pytest.raises(TaskStateConflict):
        task_refund(task_id=task.pk)
    assert balance(requester) == FUNDS - BUDGET
    evaluate(task, judged(verdict(True)))
    assert balance(requester) == FUNDS - COST - JUDGE_COST


def test_an_operator_refunding_the_running_evaluator_beats_its_late_verdict(
    requester, evaluated_agent, bob, charlie
):
    """Attack: an operator refunds the evaluator's run while it runs (platform_error); its
    worker then comes back with a rejection. Two settlements of the run, or two verdicts
    (the refund's, by recovery, and the worker's), would move the money twice."""
    task = succeed(submit(requester, evaluated_agent))
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    task_refund(task_id=run.pk)
    # The worker's settlement (attempt 1) finds nothing to settle: no verdict from it.
    assert not task_settle(task_id=run.pk, attempt=1, execution=judged(verdict(False)))
    assert Evaluation.objects.get(task=task).status == "running"
    tasks_recover()
    tasks_recover()
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason, evaluation.cost) == (
        "accept",
        "evaluator_failed",
        0,
    )
    assert balance(requester) == FUNDS - COST
    assert held_for(bob) == COST - FEE and held_for(charlie) == 0
    # A refund is the platform's failure: nothing scored against the judge.
    event = ReputationEvent.objects.get(task=run)
    assert (event.outcome, event.delta) == ("neutral", Decimal(0))


def test_a_requeued_evaluator_run_gives_one_verdict(requester, evaluated_agent, bob, charlie):
    """Attack: the evaluator's run is requeued (its lease expired) while its first worker is
    still alive; both attempts finish, with opposite verdicts."""
    from execution.services import task_requeue

    task = succeed(submit(requester, evaluated_agent))
    run = run_of(task)
    assert task_claim(task_id=run.pk) is not None
    Task.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert task_requeue(task_id=run.pk)
    assert task_claim(task_id=run.pk) is not None  # attempt 2
    assert not task_settle(task_id=run.pk, attempt=1, execution=judged(verdict(False)))
    assert task_settle(task_id=run.pk, attempt=2, execution=judged(verdict(True)))
    assert evaluation_decide(run_id=run.pk)
    assert not evaluation_decide(run_id=run.pk)
    assert Evaluation.objects.get(task=task).verdict == "accept"
    assert balance(requester) == FUNDS - COST - JUDGE_COST
    assert held_for(bob) == COST - FEE and held_for(charlie) == JUDGE_COST - JUDGE_FEE


def test_the_deadline_sweep_never_cancels_an_evaluator_run(requester, evaluated_agent):
    """Attack: the evaluated task had a deadline, which passes while its evaluator's run
    waits in the queue: cancelling the run would turn the verdict into evaluator_failed."""
    from execution.deadlines import tasks_cancel_overdue

    task = succeed(submit(requester, evaluated_agent, deadline_seconds=30))
    Task.objects.filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert run_of(task).deadline_at is None
    assert tasks_cancel_overdue() == {"cancelled": 0, "errors": 0}
    assert run_of(task).status == "queued"
    assert evaluate(task, judged(verdict(False))).verdict == "reject"
    assert balance(requester) == FUNDS - JUDGE_COST


def test_the_evaluated_task_cannot_be_cancelled_once_it_succeeded(requester, evaluated_agent):
    """Attack: the requester cancels the evaluated task after it succeeded, for a full refund
    of a budget that already paid the agent and holds the evaluator's run."""
    from marketplace.services import task_cancel

    task = succeed(submit(requester, evaluated_agent))
    with pytest.raises(TaskStateConflict):
        task_cancel(task=task)
    assert balance(requester) == FUNDS - BUDGET
    assert evaluate(task, judged(verdict(True))).verdict == "accept"
    assert balance(requester) == FUNDS - COST - JUDGE_COST


# --- who evaluates ---------------------------------------------------------------------------


def test_an_agent_that_evaluates_itself_is_paid_for_its_run_and_scored_for_both(
    requester, agent, bob
):
    """Attack: bob's agent accepts itself as its evaluator. Its rejection of its own work
    must still refund the task (the agent keeps only the evaluator run's pay) and score it
    a failure; neither run may be judged by another evaluator (no recursion)."""
    agent.accepted_evaluators.add(agent)
    before = AgentReputation.objects.get(agent=agent).score
    task = succeed(submit(requester, agent, evaluator="echo"))
    run = run_of(task)
    assert run.evaluator_id is None  # the run itself is judged by nobody
    evaluate(task, judged(verdict(False)))
    # Its run: 1_000 base + 1_000_000 fuel at 2_000 µCR per million = 3_000 µCR, fee 150.
    assert balance(requester) == FUNDS - 3_000
    assert held_for(bob) == 3_000 - 150
    # Its run's success (+3.49) and its rejection (a failure: −5, of which the requester's
    # daily cap of 5 left 1.51) are scored on the one agent, each once.
    events = ReputationEvent.objects.filter(agent=agent).order_by("id")
    assert list(events.values_list("task_id", "outcome", "delta")) == [
        (run.pk, "success", Decimal("3.4900")),
        (task.pk, "failure", Decimal("-1.5100")),
    ]
    assert AgentReputation.objects.get(agent=agent).score == before + Decimal("1.98")


def test_a_judge_whose_fuel_one_micro_credit_cannot_buy_fails_without_taking_money(
    requester, bob, charlie
):
    """Edge: the budget is exactly both leasts, and the judge's fuel costs more than 1 µCR a
    unit (2 µCR): the 1 µCR of fuel kept for it buys nothing, so its run is refused before
    it runs. The verdict counts as accept (evaluator_failed), the judge is paid nothing."""
    agent = make_agent(bob, slug="flat")
    dear = make_agent(charlie, slug="dear", base_fee=500, fuel_price=2_000_000)
    agent.accepted_evaluators.add(dear)
    budget = 1_001 + 501
    task = task_submit(
        requester=requester, agent=agent, input="hi", budget=budget, evaluator="dear"
    )
    from execution.runs import affordable_fuel
    from execution.services import task_execute

    # The agent's 1 µCR of fuel buys 500 at 2_000 µCR per million; it uses them all.
    assert affordable_fuel(task) == 500
    task = succeed(task, judged(b"done", fuel_used=500, fuel_limit=500))
    assert task.cost == 1_001
    run = run_of(task)
    assert (run.budget, affordable_fuel(run)) == (501, 0)
    task_execute(task_id=run.pk)
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason, evaluation.cost) == (
        "accept",
        "evaluator_failed",
        0,
    )
    assert balance(requester) == FUNDS - 1_001
    assert (run_of(task).failure_reason, run_of(task).refund) == ("validation_failed", 501)
    assert held_for(charlie) == 0


# --- API keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["accept", "reject", "failed", "accept+dispute"])
def test_an_api_key_is_charged_exactly_what_the_requester_paid(
    requester, evaluated_agent, bob, path
):
    """Attack: the key's give-backs across the verdict (its settlement gives back nothing,
    the verdict the run's rest and a rejection's refund, a dispute the cost) could leave
    its daily count above or below what the wallet really paid, or give back twice."""
    from marketplace.apikey_models import ApiKey
    from marketplace.apikeys import api_key_create
    from marketplace.disputes import dispute_accept, dispute_file

    key, _ = api_key_create(
        user=requester, name="bot", scopes=["tasks:write"], limits={"daily": BUDGET}
    )
    task = succeed(submit(requester, evaluated_agent, api_key=key))
    assert ApiKey.objects.get(pk=key.pk).spent_daily == BUDGET
    runs = {
        "accept": judged(verdict(True)),
        "reject": judged(verdict(False)),
        "failed": judged(b"nope", reason="invalid_output"),
    }
    evaluate(task, runs[path.split("+")[0]])
    if path == "accept+dispute":
        dispute = dispute_file(task_id=task.pk, user=requester, reason="no")
        dispute_accept(dispute_id=dispute.pk, user=bob)
        assert not evaluations_recover()["decided"]
    paid = FUNDS - balance(requester)
    expected = {"accept": COST + JUDGE_COST, "reject": JUDGE_COST, "failed": COST}
    assert paid == expected.get(path, JUDGE_COST)
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_monthly, key.spent_total) == (paid, paid, paid)


# --- what the evaluated task printed ---------------------------------------------------------


def test_a_megabyte_of_control_bytes_reaches_the_evaluator_whole(requester, evaluated_agent):
    """Attack: the agent prints 1 MiB of NULs and invalid UTF-8, which the evaluator's
    input (JSON text, stored in a text column) must carry without failing the task's
    settlement (that would leave a paid run unsettled, retried until it fails)."""
    import json

    output = (b"\x00\xff" * 2**19)[: 2**20]
    task = succeed(submit(requester, evaluated_agent), judged(output))
    run = run_of(task)
    shown = json.loads(run.input)
    assert shown["output"] == "\x00\ufffd" * 2**19
    assert len(run.input.encode()) > 4 * 2**20  # "\u0000" and U+FFFD: 9 bytes a pair
    assert evaluate(task, judged(verdict(True))).verdict == "accept"
    # Its run used 1_000_000 fuel: 1_000 + 2_000 µCR.
    assert balance(requester) == FUNDS - 3_000 - JUDGE_COST


def test_disputing_the_evaluators_own_run_refunds_only_that_run(
    requester, evaluated_agent, bob, charlie, judge
):
    """Attack: the requester disputes the evaluator's run itself (a task of its own, whose
    share is held as any): its refund must not touch the evaluated task's money, nor score
    the evaluator's verdict."""
    from marketplace.disputes import dispute_accept, dispute_file

    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(verdict(True)))
    dispute = dispute_file(task_id=run_of(task).pk, user=requester, reason="a bad judge")
    dispute_accept(dispute_id=dispute.pk, user=charlie)
    assert balance(requester) == FUNDS - COST
    assert held_for(bob) == COST - FEE and held_for(charlie) == 0
    assert Evaluation.objects.get(task=task).upheld is None
    assert Earning.objects.get(task=task).status == "held"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rejection_deadlocked_with_a_settlement_is_tried_again(caplog):
    """Attack (lock order): a rejection takes the agent's reputation row, then the accounts
    (escrow/services.py's order); a settlement of the same requester's other task on that
    agent takes the accounts, then the reputation row, last. When PostgreSQL aborts the
    verdict to break the deadlock, nothing of it may stay half-done, and the worker's call
    must still settle it once (it used to raise, leaving the verdict to the next recovery)."""
    import time

    from django.db import connection, transaction

    from escrow.models import Account

    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    task = succeed(submit(alice, agent))
    run = settle_run(task, verdict(False))
    wallet = Account.objects.get(user=alice).pk
    holding, deciding = threading.Event(), threading.Event()
    decided: list[bool] = []

    def body(index: int) -> None:
        if index == 0:  # a settlement's order: the requester's wallet, then the reputation
            with transaction.atomic(durable=True):
                with connection.cursor() as cursor:  # the verdict is the one aborted
                    cursor.execute("SET LOCAL deadlock_timeout = '10s'")
                Account.objects.select_for_update().get(pk=wallet)
                holding.set()
                assert deciding.wait(5)
                time.sleep(0.3)  # the verdict holds the reputation row and waits for the wallet
                AgentReputation.objects.select_for_update().get(agent=agent)
            return
        assert holding.wait(5)
        with connection.cursor() as cursor:  # it looks for the cycle once the other waits
            cursor.execute("SET deadlock_timeout = '1s'")
        deciding.set()
        decided.append(evaluation_decide(run_id=run.pk))

    assert run_threads(2, body) == []
    assert "deadlocked, trying again" in caplog.text
    assert decided == [True]
    assert evaluations_recover() == {"decided": 0, "errors": 0}
    assert Evaluation.objects.get(task=task).verdict == "reject"
    assert ReputationEvent.objects.filter(task=task).count() == 1
    assert balance(alice) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE


# --- the evaluator's score on disputes -------------------------------------------------------


def test_a_failed_evaluator_is_not_scored_for_a_dispute_it_never_judged(
    requester, evaluated_agent, judge, bob
):
    """Attack: the judge failed (its verdict counts as accept, evaluator_failed); the
    requester disputes and the owner refunds. 'Overturning' a verdict the judge never gave
    would cost it twice for one failure."""
    from marketplace.disputes import dispute_accept, dispute_file

    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(b"", reason="timeout", exit_code=None))
    dispute_accept(
        dispute_id=dispute_file(task_id=task.pk, user=requester, reason="x").pk, user=bob
    )
    assert Evaluation.objects.get(task=task).upheld is None
    assert not ReputationEvent.objects.filter(agent=judge, task=None).exists()
    assert balance(requester) == FUNDS  # the task's cost back, the failed run refunded
    assert held_for(bob) == 0


def test_the_evaluator_is_scored_once_however_many_disputes_follow(
    requester, evaluated_agent, judge, bob
):
    """Attack: after an operator upholds the judge's accept, the requester disputes again
    (a rejected dispute leaves room for another) and the owner refunds it: the judge is
    scored for the first resolution only, and the money follows the last."""
    from marketplace.disputes import dispute_accept, dispute_contest, dispute_decide, dispute_file

    task = succeed(submit(requester, evaluated_agent))
    evaluate(task, judged(verdict(True)))
    first = dispute_file(task_id=task.pk, user=requester, reason="wrong")
    dispute_contest(dispute_id=first.pk, user=bob, statement="right")
    dispute_decide(dispute_id=first.pk, refund=False, operator="ops")
    second = dispute_file(task_id=task.pk, user=requester, reason="still wrong")
    dispute_accept(dispute_id=second.pk, user=bob)
    judged_events = ReputationEvent.objects.filter(agent=judge, task=None)
    assert list(judged_events.values_list("reason", "outcome")) == [("verdict_upheld", "success")]
    assert Evaluation.objects.get(task=task).upheld is True
    assert balance(requester) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0


def test_a_rejection_of_the_requesters_own_agent_is_neutral(bob, judge, charlie):
    """Attack: bob submits to his own agent, naming charlie's judge, hoping its rejection
    gives him his money back and 'scores' his agent (or that a judge's rejection of a
    self-dealt task moves anything but the money)."""
    deposit_create(user_id=bob.pk, amount=FUNDS)
    own = make_agent(bob, slug="mine")
    own.accepted_evaluators.add(judge)
    before = AgentReputation.objects.get(agent=own).score
    task = succeed(submit(bob, own))
    evaluate(task, judged(verdict(False)))
    event = ReputationEvent.objects.get(task=task)
    assert (event.outcome, event.neutral_reason) == ("neutral", "self_dealing")
    assert AgentReputation.objects.get(agent=own).score == before
    assert balance(bob) == FUNDS - JUDGE_COST
    assert held_for(charlie) == JUDGE_COST - JUDGE_FEE


@pytest.mark.parametrize("accept", [True, False], ids=["accept", "reject"])
def test_a_refunded_dispute_of_the_evaluators_run_is_given_back_to_the_key(
    requester, evaluated_agent, charlie, accept
):
    """Attack on a key's caps: the key paid the evaluator's run (from the task's budget); a
    refunded dispute of that run must give its cost back to the key, as it does to the
    wallet, or the key's day keeps counting money the requester got back."""
    from marketplace.apikeys import api_key_create
    from marketplace.disputes import dispute_accept, dispute_file

    key, _ = api_key_create(user=requester, name="bot", scopes=["tasks:write"])
    task = succeed(submit(requester, evaluated_agent, api_key=key))
    evaluate(task, judged(verdict(accept)))
    dispute = dispute_file(task_id=run_of(task).pk, user=requester, reason="a bad judge")
    dispute_accept(dispute_id=dispute.pk, user=charlie)
    paid = COST if accept else 0
    assert balance(requester) == FUNDS - paid
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_monthly, key.spent_total) == (paid, paid, paid)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: b"\xef\xbb\xbf" + text.encode(), id="utf-8-bom"),
        pytest.param(lambda text: text.encode("utf-16"), id="utf-16"),
    ],
)
def test_a_verdict_the_output_check_passed_is_read_as_that_verdict(
    requester, evaluated_agent, bob, charlie, judge, encode
):
    """Attack: the judge prints its verdict with a UTF-8 byte-order mark (or in UTF-16),
    which the run's output check reads as JSON (so the run succeeds and is paid). Read
    any other way, it would count as the judge failing: paid for a verdict it never gave
    (accept, evaluator_failed), and never answerable for it in a dispute."""
    from execution.services import check_output

    task = succeed(submit(requester, evaluated_agent))
    run = run_of(task)
    text = '{"accept": false, "score": 0.2, "reason": "wrong"}'
    checked = check_output(run, judged(encode(text)))
    assert checked.succeeded  # the output check took it for the verdict it is
    assert task_claim(task_id=run.pk) is not None
    assert task_settle(task_id=run.pk, attempt=1, execution=checked)
    assert evaluation_decide(run_id=run.pk)
    evaluation = Evaluation.objects.get(task=task)
    assert (evaluation.verdict, evaluation.reason, evaluation.score) == (
        "reject",
        "wrong",
        Decimal("0.2000"),
    )
    assert balance(requester) == FUNDS - JUDGE_COST
    assert held_for(bob) == 0 and held_for(charlie) == JUDGE_COST - JUDGE_FEE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refunds_of_the_task_and_of_its_evaluators_run_at_once_give_the_key_back_once_each():
    """Attack: the task's and its judge's run's disputes are refunded at the same moment,
    both giving back to the one charge the key paid them with: neither may read what the
    charge had given back before the other did (the key's count would go below zero, or
    stay above what the wallet paid)."""
    from marketplace.apikeys import api_key_create
    from marketplace.disputes import dispute_accept, dispute_file

    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    key, _ = api_key_create(user=alice, name="bot", scopes=["tasks:write"])
    task = succeed(submit(alice, agent, api_key=key))
    evaluate(task, judged(verdict(True)))
    disputes = [
        (dispute_file(task_id=task.pk, user=alice, reason="wrong").pk, bob),
        (dispute_file(task_id=run_of(task).pk, user=alice, reason="a bad judge").pk, charlie),
    ]

    def body(index: int) -> None:
        dispute_id, owner = disputes[index]
        dispute_accept(dispute_id=dispute_id, user=owner)

    assert run_threads(2, body) == []
    assert balance(alice) == FUNDS
    key.refresh_from_db()
    assert (key.spent_daily, key.spent_total) == (0, 0)
    assert held_for(bob) == 0 and held_for(charlie) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rejections_decided_at_once_stay_inside_the_daily_cap():
    """Attack (griefing): one requester's four rejections of one agent decided at the same
    moment, each reading the day's moves before the others wrote theirs, would take 4 × 5
    points off the agent instead of the requester's daily cap of 5."""
    alice, bob, charlie = (UserFactory.create(username=name) for name in ("alice", "bob", "carl"))
    deposit_create(user_id=alice.pk, amount=FUNDS)
    agent = make_agent(bob)
    agent.accepted_evaluators.add(make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000))
    before = AgentReputation.objects.get(agent=agent).score
    tasks = [succeed(submit(alice, agent)) for _ in range(4)]
    runs = [settle_run(task, verdict(False)).pk for task in tasks]

    def body(index: int) -> None:
        assert evaluation_decide(run_id=runs[index])

    assert run_threads(4, body) == []
    events = ReputationEvent.objects.filter(task__in=tasks)
    # The first takes the whole cap (−5); the others find nothing left (neutral, daily_cap).
    assert sorted(events.values_list("outcome", "neutral_reason")) == [
        ("failure", ""),
        *[("neutral", "daily_cap")] * 3,
    ]
    assert sum(-event.delta for event in events) == Decimal(5)
    assert AgentReputation.objects.get(agent=agent).score == before - 5
    assert balance(alice) == FUNDS - 4 * JUDGE_COST
    assert held_for(bob) == 0
