"""Per-task settlement through a payment channel vs through escrow, same run, same agent,
same result: settlements/s, p50/p95/p99 and their ratio, single-threaded and with 4
threads; the submissions too (a channel's voucher is checked there); and the statements
each kind of settlement runs.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/channels.py [--tasks K]

Needs DATABASE_URL pointing at PostgreSQL; migrates it and creates its own users, agent,
key and channel. Prints tables; asserts nothing about timings. Closes the channel and
ends with the ledger audit.

In this process DEBUG is off, as in production, so Django keeps no query log.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent
ECHO = BASE_DIR / "agents" / "dist" / "echo.wasm"
RUN_ID = uuid.uuid4().hex[:8]


def require_postgres() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgresql://", "postgres://")):
        sys.exit(
            "This benchmark needs PostgreSQL: DATABASE_URL must be a postgresql:// URL "
            f"(got {'nothing' if not url else url.split(':', 1)[0] + '://…'}).\n"
            "Run it on a throwaway cluster:\n"
            "    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/channels.py"
        )


require_postgres()
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# Submissions enqueue a message each; these tasks are settled in-process, so their
# messages go to a queue of this run's own, purged at the end.
os.environ["Q_CLUSTER_NAME"] = f"bench-{RUN_ID}"

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from escrow.audit import ledger_audit  # noqa: E402
from escrow.channels import channel_close, channel_open, key_register, voucher_message  # noqa: E402
from escrow.models import PaymentChannel  # noqa: E402
from escrow.services import deposit_create  # noqa: E402
from execution.services import Execution, run_in_sandbox, task_claim, task_settle  # noqa: E402
from marketplace.binaries import binary_upload  # noqa: E402
from marketplace.models import Agent, Task  # noqa: E402
from marketplace.services import agent_create, task_submit, user_create  # noqa: E402

INPUT = "hello, agent exchange"
BUDGET = 50_000  # µCR; an echo run costs about the base fee
FUNDS = 1_000 * 1_000_000
BLOCK = 25  # tasks per thread in each alternating block
T = TypeVar("T")
Claim = tuple[Any, int]


# --- figures and tables ------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (inclusive method: interpolated between the samples)."""
    if not values:
        return (float("nan"),) * 3  # type: ignore[return-value]
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    print(f"\n{title}")

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "".join(
            f"  {cell:>{width}}" for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        return first + rest

    print(line(headers))
    print("-" * len(line(headers)))
    for row in rows:
        print(line(row))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


@dataclass
class Timings:
    durations: list[float] = field(default_factory=list)
    wall: float = 0.0  # summed over the timed blocks

    @property
    def rate(self) -> float:
        return len(self.durations) / self.wall

    def row(self, label: str) -> list[str]:
        p50, p95, p99 = percentiles(self.durations)
        return [label, str(len(self.durations)), ms(p50), ms(p95), ms(p99), f"{self.rate:,.0f}"]


# --- the world this run works in ---------------------------------------------------------


@dataclass
class World:
    requester: User
    agent: Agent
    key: Ed25519PrivateKey
    channel: PaymentChannel
    nonce: int = 0
    authorized: int = 0

    def voucher(self) -> dict[str, Any]:
        """The next voucher: a higher nonce, and one more budget on the cumulative amount."""
        self.nonce += 1
        self.authorized += BUDGET
        message = voucher_message(self.channel.pk, self.nonce, self.authorized)
        return {
            "nonce": self.nonce,
            "cumulative_amount": self.authorized,
            "signature": base64.b64encode(self.key.sign(message)).decode(),
        }


def world_create(channel_tasks: int) -> World:
    owner = user_create(username=f"bench-owner-{RUN_ID}")
    requester = user_create(username=f"bench-requester-{RUN_ID}")
    agent = agent_create(
        owner=owner,
        slug=f"bench-echo-{RUN_ID}",
        name=f"Benchmark echo {RUN_ID}",
        base_fee=1_000,
        fuel_price=2_000,
    )
    binary_upload(agent=agent, data=ECHO.read_bytes())
    agent.refresh_from_db()
    deposit_create(user_id=requester.pk, amount=FUNDS)
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_register(user_id=requester.pk, public_key=base64.b64encode(public).decode())
    channel = channel_open(
        requester_user_id=requester.pk,
        agent_id=agent.pk,
        payee_user_id=owner.pk,
        deposit=channel_tasks * BUDGET,
    )
    return World(requester=requester, agent=agent, key=key, channel=channel)


def submission(world: World, kind: str) -> dict[str, Any]:
    """The arguments of one task_submit; a channel task carries the next signed voucher."""
    arguments: dict[str, Any] = {
        "requester": world.requester,
        "agent": world.agent,
        "input": INPUT,
        "budget": BUDGET,
    }
    if kind == "channel":
        arguments |= {
            "payment": "channel",
            "channel": str(world.channel.pk),
            "voucher": world.voucher(),
        }
    return arguments


def submit_alternating(
    world: World, count: int
) -> tuple[list[Claim], list[Claim], Timings, Timings]:
    """`count` tasks of each kind, submitted in alternating blocks (one thread), then
    claimed. Only task_submit is timed: the requester signs its voucher beforehand."""
    ids: dict[str, list[Any]] = {"escrow": [], "channel": []}
    timings = {"escrow": Timings(), "channel": Timings()}
    while len(ids["escrow"]) < count or len(ids["channel"]) < count:
        for kind in ids:
            for _ in range(min(BLOCK, count - len(ids[kind]))):
                arguments = submission(world, kind)
                began = time.perf_counter()
                ids[kind].append(task_submit(**arguments).pk)
                took = time.perf_counter() - began
                timings[kind].durations.append(took)
                timings[kind].wall += took
    claims: dict[str, list[Claim]] = {"escrow": [], "channel": []}
    for kind, task_ids in ids.items():
        for task_id in task_ids:
            claim = task_claim(task_id=task_id)
            assert claim is not None
            claims[kind].append((task_id, claim[1]))
    return claims["escrow"], claims["channel"], timings["escrow"], timings["channel"]


# --- timed settlements ---------------------------------------------------------------------


def timed_threads(
    jobs: Sequence[Sequence[T]], work: Callable[[T], object]
) -> tuple[list[float], float]:
    """Run `work` over each job list in its own thread (its own DB connection), all
    starting together. Returns every call's duration and the wall time."""
    durations: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs) + 1)

    def worker(items: Sequence[T]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=60)
            for item in items:
                began = time.perf_counter()
                work(item)
                durations.append(time.perf_counter() - began)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=60)
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return durations, wall


def settler(execution: Execution) -> Callable[[Claim], None]:
    def settle(claim: Claim) -> None:
        task_id, attempt = claim
        if not task_settle(task_id=task_id, attempt=attempt, execution=execution):
            raise RuntimeError(f"task {task_id} did not settle")

    return settle


def settle_alternating(
    escrow: list[Claim], channel: list[Claim], threads: int, settle: Callable[[Claim], None]
) -> tuple[Timings, Timings]:
    """Alternate blocks of escrow and channel settlements, each block on `threads` threads."""
    results = (Timings(), Timings())
    step = threads * BLOCK
    for start in range(0, max(len(escrow), len(channel)), step):
        for claims, timings in zip((escrow, channel), results, strict=True):
            block = claims[start : start + step]
            if block:
                durations, wall = timed_threads([block[i::threads] for i in range(threads)], settle)
                timings.durations += durations
                timings.wall += wall
    return results


class StatementTimer:
    """A Django execute wrapper: time spent per kind of statement (verb, table, lock)."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            entry = self.kinds[statement_kind(sql)]
            entry[0] += 1
            entry[1] += time.perf_counter() - began


def statement_kind(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper()
    if verb in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
        return "SAVEPOINT / RELEASE"
    table_name = re.search(r'(?:FROM|UPDATE|INTO)\s+"?(\w+)"?', sql)
    name = f" {table_name.group(1)}" if table_name else ""
    lock = " FOR NO KEY UPDATE" if "FOR NO KEY UPDATE" in sql else ""
    return f"{verb}{name}{lock}"


@contextmanager
def statement_breakdown() -> Iterator[dict[str, list[float]]]:
    """Time every statement and COMMIT of this thread's connection: kind → [count, s]."""
    timer = StatementTimer()
    commit = connection.commit

    def timed_commit() -> None:
        began = time.perf_counter()
        commit()
        entry = timer.kinds["COMMIT"]
        entry[0] += 1
        entry[1] += time.perf_counter() - began

    connection.commit = timed_commit  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(timer):
            yield timer.kinds
    finally:
        del connection.commit


def breakdown(claims: list[Claim], settle: Callable[[Claim], None]) -> dict[str, list[float]]:
    with statement_breakdown() as kinds:
        began = time.perf_counter()
        for claim in claims:
            settle(claim)
        total = time.perf_counter() - began
    spent = sum(seconds for _, seconds in kinds.values())
    result = {
        kind: [n / len(claims), seconds / len(claims)] for kind, (n, seconds) in kinds.items()
    }
    result["Python between statements"] = [0, (total - spent) / len(claims)]
    result["whole settlement"] = [sum(n for n, _ in result.values()), total / len(claims)]
    return result


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, default=300, help="settlements of each kind per timing mode (300)"
    )
    args = parser.parse_args()
    warmup, sample = 10, 50
    per_kind = warmup + 2 * args.tasks + sample

    call_command("migrate", verbosity=0)
    settings.DEBUG = False
    world = world_create(channel_tasks=per_kind)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (server,) = cursor.fetchone()
    print(
        f"PostgreSQL {server}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"agent {world.agent.slug} (echo); budget {BUDGET} µCR a task; "
        f"channel deposit {world.channel.deposit} µCR"
    )

    escrow, channel, submit_escrow_t, submit_channel_t = submit_alternating(world, per_kind)
    first = Task.objects.select_related("agent", "binary").get(pk=escrow[0][0])
    execution = run_in_sandbox(first)
    assert execution.succeeded, execution
    settle = settler(execution)
    for claim in escrow[:warmup] + channel[:warmup]:
        settle(claim)
    escrow, channel = escrow[warmup:], channel[warmup:]

    single = settle_alternating(escrow[: args.tasks], channel[: args.tasks], 1, settle)
    rest = slice(args.tasks, 2 * args.tasks)
    multi = settle_alternating(escrow[rest], channel[rest], 4, settle)
    sampled = slice(2 * args.tasks, None)
    escrow_statements = breakdown(escrow[sampled], settle)
    channel_statements = breakdown(channel[sampled], settle)

    table(
        "Settlement (task_settle of the same successful echo result), ms; "
        f"alternating blocks of {BLOCK} a thread",
        ["", "n", "p50", "p95", "p99", "per s"],
        [
            single[0].row("escrow, 1 thread"),
            single[1].row("channel, 1 thread"),
            multi[0].row("escrow, 4 threads"),
            multi[1].row("channel, 4 threads"),
        ],
    )
    for threads, (by_escrow, by_channel) in [(1, single), (4, multi)]:
        e99, c99 = percentiles(by_escrow.durations)[2], percentiles(by_channel.durations)[2]
        print(
            f"channel / escrow, {threads} thread{'s' * (threads > 1)}: settlements/s × "
            f"{by_channel.rate / by_escrow.rate:.2f}, p99 ÷ {e99 / c99:.2f}"
        )

    print(
        "(the 4 threads share one process; every settlement here locks the agent's reputation "
        "row, an escrow one also the escrow and platform-fee accounts and both wallets, a "
        "channel one the channel row)"
    )

    table(
        "Submission (task_submit: task, escrow row, hold or voucher check, enqueue), ms; "
        "1 thread, alternating blocks",
        ["", "n", "p50", "p95", "p99", "per s"],
        [submit_escrow_t.row("escrow"), submit_channel_t.row("channel (voucher checked)")],
    )
    print(f"channel / escrow submissions/s × {submit_channel_t.rate / submit_escrow_t.rate:.2f}")

    kinds = sorted(
        set(escrow_statements) | set(channel_statements),
        key=lambda k: (
            k in ("COMMIT", "Python between statements", "whole settlement"),
            k == "whole settlement",
            -escrow_statements.get(k, [0, 0.0])[1] - channel_statements.get(k, [0, 0.0])[1],
        ),
    )

    def cells(statements: dict[str, list[float]], kind: str) -> list[str]:
        if kind not in statements:
            return ["", ""]
        count, seconds = statements[kind]
        return [f"{count:.1f}" if count else "", ms(seconds)]

    table(
        f"Statements a settlement runs ({sample} of each kind, 1 thread, each statement timed; "
        "the timing adds a little)",
        ["statement", "escrow n", "escrow ms", "channel n", "channel ms"],
        [
            [kind, *cells(escrow_statements, kind), *cells(channel_statements, kind)]
            for kind in kinds
        ],
    )

    closed = channel_close(channel_id=world.channel.pk, by_user_id=world.requester.pk)
    print(
        f"\nchannel closed: {closed.status}; redeemed {closed.redeemed} µCR "
        f"(fees {closed.fees}), {closed.deposit - closed.redeemed} µCR back to the requester"
    )
    get_broker().purge_queue()  # the messages of the tasks settled in-process
    report = ledger_audit()
    status = "ok" if report.ok else "FAILED: " + "; ".join(report.violations[:5])
    print(
        f"ledger audit: {status} ({report.accounts} accounts, {report.transfers} transfers, "
        f"{report.escrows} escrows, {report.channels} channels, "
        f"{report.in_channels} µCR in open channels)"
    )
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
