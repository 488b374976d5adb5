"""Demo data for the embedded default: idempotent, safe to run on every start.

Besides the users, it lists the sample agents (agents/dist/*.wasm) for the demo owner and
gives the demo requester some history: a few tasks submitted and run for real, in this
process, so that the money, the receipts and the reputation curves are the genuine article;
a paid withdrawal; and a dispute its owner accepted (refunded, with the receipt's replay).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from escrow.channels import channel_open, voucher_sign_custodial
from escrow.models import Account, Dispute, Earning, Withdrawal
from escrow.services import deposit_create
from execution.dispute_evidence import dispute_replay
from execution.services import task_execute
from marketplace.binaries import binary_upload
from marketplace.disputes import dispute_accept, dispute_file
from marketplace.models import Agent, Task
from marketplace.services import agent_create, task_submit, user_create
from marketplace.withdrawals import withdrawal_process, withdrawal_request

DEMO_REQUESTER = "demo"
DEMO_OWNER = "demo-owner"
DEMO_FUNDS = 100 * 1_000_000  # 100 CR
DEMO_WITHDRAWAL = 5 * 1_000_000  # 5 CR, paid out by the dev provider
DEMO_DISPUTED_TASK = "demo-task-4"  # the word count, refunded after a dispute
AGENTS_DIR = Path(settings.BASE_DIR) / "agents" / "dist"
CONTRACTS_DIR = Path(settings.BASE_DIR) / "agents" / "contracts"
JSON_OBJECT = {"type": "object"}


def contract(slug: str) -> dict[str, Any]:
    """A sample agent's input and output schema, as agents/contracts/<slug>.json has them."""
    return json.loads((CONTRACTS_DIR / f"{slug}.json").read_text())


@dataclass(frozen=True)
class SampleAgent:
    slug: str
    name: str
    description: str
    tags: list[str]
    base_fee: int  # µCR
    fuel_price: int  # µCR per million fuel
    output_schema: dict | None = None
    # The first version's input schema: its tasks send a JSON document that must match it.
    input_schema: dict | None = None


SAMPLE_AGENTS = [
    SampleAgent(
        "echo",
        "Echo",
        "Returns its input unchanged. The quickest way to try the whole path: escrow, "
        "sandbox, settlement and receipt.",
        ["text", "utility"],
        base_fee=1_000,
        fuel_price=1_000,
    ),
    SampleAgent(
        "wordcount",
        "Word count",
        "Counts the words, lines, characters and bytes of UTF-8 text and answers in JSON.",
        ["text", "json"],
        base_fee=2_000,
        fuel_price=2_000,
        output_schema=JSON_OBJECT,
    ),
    SampleAgent(
        "sentiment",
        "Sentiment",
        "Scores English text against a lexicon of positive and negative words; answers in "
        "JSON with a label: positive, negative or neutral.",
        ["text", "nlp", "json"],
        base_fee=5_000,
        fuel_price=2_000,
        output_schema=JSON_OBJECT,
    ),
    SampleAgent(
        "primes",
        "Primes",
        "Counts the primes up to n (at most 50,000,000) with a segmented sieve. CPU-heavy: "
        "the bigger n, the more fuel, the higher the cost.",
        ["math", "cpu", "json"],
        base_fee=2_000,
        fuel_price=10_000,
        output_schema=JSON_OBJECT,
    ),
    SampleAgent(
        "wordstats",
        "Word statistics",
        "Word frequencies of a text, with options: ignore case, a shortest word, how many of "
        "the most frequent words to list. Takes a JSON document checked against its input "
        "schema before anything is paid, and answers in JSON that matches its output schema.",
        ["text", "json", "typed"],
        base_fee=3_000,
        fuel_price=2_000,
        output_schema=contract("wordstats")["output_schema"],
        input_schema=contract("wordstats")["input_schema"],
    ),
    # Evaluators (SPEC §21): they check another agent's output before its money moves.
    SampleAgent(
        "countcheck",
        "Count check",
        "An evaluator: recounts the words of a task's input by wordcount's or wordstats' rule "
        'and accepts the output when its "words" match.',
        ["evaluator", "json"],
        base_fee=1_000,
        fuel_price=1_000,
        output_schema=contract("countcheck")["output_schema"],
        input_schema=contract("countcheck")["input_schema"],
    ),
    SampleAgent(
        "schemacheck",
        "Schema check",
        "An evaluator: checks a task's output against its contract's output schema and the "
        'input\'s "expected" reference, scoring the share of checks passed.',
        ["evaluator", "json"],
        base_fee=1_000,
        fuel_price=1_000,
        output_schema=contract("schemacheck")["output_schema"],
        input_schema=contract("schemacheck")["input_schema"],
    ),
]
# Which evaluators each sample agent accepts.
ACCEPTED_EVALUATORS = {
    "echo": ["countcheck"],
    "wordcount": ["countcheck"],
    "wordstats": ["countcheck", "schemacheck"],
}


@dataclass(frozen=True)
class SampleTask:
    agent: str
    input: Any  # a string, or a JSON value for an agent with an input schema
    budget: int  # µCR
    limits: dict[str, Any] = field(default_factory=dict)
    evaluator: str | None = None


# A channel the demo requester keeps open, with a couple of tasks paid through it.
DEMO_CHANNEL = ("sentiment", 2_000_000)
CHANNEL_TASKS = [
    SampleTask("sentiment", "What a wonderful, helpful and friendly team.", 100_000),
    SampleTask("sentiment", "The delivery was late and the box was damaged.", 100_000),
]

# Run in this order; the primes agent gets a curve with ups and downs. One requester moves an
# agent by at most REPUTATION_DAILY_CAP_PER_REQUESTER points a day: the later runs show as
# not scored (`daily_cap`), and the one out of fuel under a low limit as `requester_limits`.
SAMPLE_TASKS = [
    SampleTask("echo", "Hello, Agent Exchange!", 100_000),
    SampleTask("primes", "1000", 500_000),
    SampleTask("primes", "ten thousand", 500_000),  # not a number: the agent exits 2
    SampleTask(
        "wordcount", "The quick brown fox jumps over the lazy dog.\nThen it slept.", 200_000
    ),
    SampleTask("primes", "1000000", 1_000_000),
    SampleTask("sentiment", "I love this great product, it works wonderfully.", 200_000),
    SampleTask("primes", "100000", 500_000),
    SampleTask("sentiment", "Terrible support and an awful, broken update.", 200_000),
    SampleTask("primes", "10000000", 5_000_000),
    SampleTask("primes", "50000000", 5_000_000, {"fuel_limit": 100_000_000}),  # out of fuel
    SampleTask("primes", "2000000", 1_000_000),
    SampleTask("primes", "5000000", 3_000_000),
    SampleTask("echo", "Receipts make every run verifiable.", 100_000),
    SampleTask(
        "wordstats",
        {
            "text": "The cat sat on the mat. The mat was flat, and the cat was happy.",
            "ignore_case": True,
            "min_length": 3,
            "top": 3,
        },
        300_000,
    ),
    SampleTask("wordstats", {"text": "To be, or not to be: that is the question."}, 300_000),
    # Evaluated: accepted, accepted, and rejected (echo's output is not a word count).
    SampleTask("wordcount", "Count these five words please", 300_000, evaluator="countcheck"),
    SampleTask(
        "wordstats",
        {"text": "one two two three three three", "top": 2},
        400_000,
        evaluator="schemacheck",
    ),
    SampleTask("echo", "Three words here", 300_000, evaluator="countcheck"),
]


class Command(BaseCommand):
    help = (
        "Create the demo requester (with a funded wallet and some finished tasks), the demo "
        "agent owner with the sample agents, and an admin."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DEMO_PASSWORD", "demo-password")
        requester = self._user(DEMO_REQUESTER, password)
        owner = self._user(DEMO_OWNER, password)
        if not Account.objects.filter(user=requester, credits__kind="deposit").exists():
            deposit_create(user_id=requester.pk, amount=DEMO_FUNDS, idempotency_key="demo-funds")
        agents = {sample.slug: self._agent(owner, sample) for sample in SAMPLE_AGENTS}
        for slug, evaluators in ACCEPTED_EVALUATORS.items():
            if agents[slug].owner_id == owner.pk and not agents[slug].accepted_evaluators.exists():
                agents[slug].accepted_evaluators.add(*(agents[name] for name in evaluators))
        ran = self._history(requester, agents)
        ran += self._channel(requester, agents)
        self._withdrawal(requester)
        self._dispute(requester, owner)
        admin_password = self._admin()
        self.stdout.write(
            f"demo data ready ({len(agents)} agents, {ran} demo tasks run now): log in as "
            f"{DEMO_REQUESTER!r} or {DEMO_OWNER!r} with password {password!r}; "
            f"admin: 'admin' / {admin_password!r}"
        )

    def _withdrawal(self, requester: User) -> None:
        """One paid withdrawal in the requester's history."""
        if Withdrawal.objects.filter(user=requester).exists():
            return
        withdrawal, _ = withdrawal_request(
            user=requester, amount=DEMO_WITHDRAWAL, idempotency_key="demo-withdrawal"
        )
        withdrawal_process(withdrawal.pk)

    def _dispute(self, requester: User, owner: User) -> None:
        """One dispute, refunded by the owner, with the receipt, its replay and the signed
        resolution: the requester disputes the word count while its earning is held."""
        if Dispute.objects.filter(requester=requester).exists():
            return
        task = Task.objects.filter(
            requester=requester,
            idempotency_key=DEMO_DISPUTED_TASK,
            status=Task.Status.SUCCEEDED,
            earning__status=Earning.Status.HELD,
        ).first()
        if task is None:  # its earning was released before this demo step existed
            return
        dispute = dispute_file(
            task_id=task.pk, user=requester, reason="The count is one line short."
        )
        dispute_replay(dispute.pk)  # here, so the demo shows it; the queued one is a no-op
        dispute_accept(dispute_id=dispute.pk, user=owner)

    def _user(self, username: str, password: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = user_create(username=username, password=password)
        return user

    def _agent(self, owner: User, sample: SampleAgent) -> Agent:
        agent = Agent.objects.filter(slug=sample.slug).first()
        if agent is None:
            agent = agent_create(
                owner=owner,
                slug=sample.slug,
                name=sample.name,
                description=sample.description,
                tags=sample.tags,
                base_fee=sample.base_fee,
                fuel_price=sample.fuel_price,
                output_schema=sample.output_schema,
            )
        if agent.owner_id == owner.pk and agent.current_binary_id is None:
            binary_upload(
                agent=agent,
                data=(AGENTS_DIR / f"{sample.slug}.wasm").read_bytes(),
                input_schema=sample.input_schema,
            )
            agent.refresh_from_db()
        return agent

    def _history(self, requester: User, agents: dict[str, Agent]) -> int:
        """Submit and run the sample tasks once; a rerun finds them by their keys."""
        ran = 0
        for number, sample in enumerate(SAMPLE_TASKS, start=1):
            agent = agents[sample.agent]
            if agent.owner.username != DEMO_OWNER or agent.current_binary_id is None:
                continue
            task = task_submit(
                requester=requester,
                agent=agent,
                input=sample.input,
                budget=sample.budget,
                idempotency_key=f"demo-task-{number}",
                evaluator=sample.evaluator,
                **sample.limits,
            )
            # The worker may get the queued message too; the claim lets only one run it.
            if task.status == Task.Status.QUEUED:
                task_execute(task_id=task.pk)
                ran += 1
            # An evaluated task's evaluator runs next (its verdict settles with it).
            for run in Task.objects.filter(evaluates=task, status=Task.Status.QUEUED):
                task_execute(task_id=run.pk)
        return ran

    def _channel(self, requester: User, agents: dict[str, Agent]) -> int:
        """An open payment channel with some voucher history."""
        slug, deposit = DEMO_CHANNEL
        agent = agents[slug]
        if agent.owner.username != DEMO_OWNER or agent.current_binary_id is None:
            return 0
        channel = channel_open(
            requester_user_id=requester.pk,
            agent_id=agent.pk,
            payee_user_id=agent.owner_id,
            deposit=deposit,
            idempotency_key="demo-channel",
        )
        ran = 0
        for number, sample in enumerate(CHANNEL_TASKS, start=1):
            key = f"demo-channel-task-{number}"
            if Task.objects.filter(requester=requester, idempotency_key=key).exists():
                continue
            voucher = voucher_sign_custodial(
                user_id=requester.pk, channel_id=channel.pk, budget=sample.budget
            )
            task = task_submit(
                requester=requester,
                agent=agent,
                input=sample.input,
                budget=sample.budget,
                payment=Task.Payment.CHANNEL,
                channel=channel.pk,
                voucher=voucher.as_dict(),
                idempotency_key=key,
            )
            task_execute(task_id=task.pk)
            ran += 1
        return ran

    def _admin(self) -> str:
        """An operator account whose password is generated once into the data directory."""
        path = settings.DATA_DIR / "admin_password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or path.read_text().strip()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            User.objects.create_superuser("admin", password=password)
        return password
