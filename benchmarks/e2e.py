"""End-to-end figures on PostgreSQL: worker throughput with 1 and 4 workers, queue wait and
run time, the settlement transaction against a bare SQL transfer, and the per-task cost
of the whole pipeline against a sandbox-only run.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/e2e.py [--tasks N]

Needs DATABASE_URL pointing at PostgreSQL; migrates it, creates its own users and agent,
and starts real `manage.py qcluster` processes on a queue of its own. Prints tables;
asserts nothing about timings. Ends with the ledger audit, then the SPEC §20 figures
(`benchmarks/settlement.py` measures the settlement ones alone).

In this process DEBUG is off, as in production, so Django keeps no query log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import (
    BUDGET,
    ECHO,
    INPUT,
    RUN_ID,
    Claim,
    StatementTimer,
    audit,
    claim_task,
    database_prepare,
    external_account_id,
    first_execution,
    ms,
    percentiles,
    platform,
    settler,
    statement_breakdown,
    table,
    timed_threads,
    timing_row,
)

# isort: split
from django.db import connection, transaction

from escrow.models import Account, Transfer
from execution.engine import sandbox
from marketplace.binaries import binary_read, binary_upload
from marketplace.services import agent_create, task_submit

# isort: split
from benchmarks import reference
from benchmarks.cluster_runs import World, cluster_run, world_create
from benchmarks.roundtrips import HEADERS as ROUND_TRIP_HEADERS
from benchmarks.roundtrips import round_trip_rows
from benchmarks.settlement import (
    P99_TARGET_MS,
    claimed,
    settlement_rounds,
    settlement_summary,
    split,
)
from benchmarks.submission import batches_run, end_to_end_table, submission_summary
from benchmarks.web import end_to_end

# --- in-process timings --------------------------------------------------------------------


def spread_run(world: World, settle: Callable[[Claim], None], count: int, reference_n: int) -> None:
    """The 4 threads again, each settling the tasks of an agent of its own (the reference
    spread over 4 agents too): what settling one agent from every thread costs above."""
    agents = [world.agent]
    for i in range(1, 4):
        agent = agent_create(
            owner=world.owner,
            slug=f"bench-echo-{RUN_ID}-{i}",
            name=f"Benchmark echo {RUN_ID} {i}",
            base_fee=1_000,
            fuel_price=2_000,
        )
        binary_upload(agent=agent, data=ECHO.read_bytes())
        agents.append(agent)
    ids = [
        task_submit(requester=world.requester, agent=agents[i % 4], input=INPUT, budget=BUDGET).pk
        for i in range(count)
    ]
    claims = [claim_task(task_id) for task_id in ids]
    durations, wall = timed_threads(
        [[claim for claim in claims if claim.task.agent_id == a.pk] for a in agents], settle
    )
    line = (
        f"task_settle, 4 threads, an agent each: {count / wall:,.0f}/s, "
        f"p99 {percentiles(durations)[2] * 1000:.1f} ms"
    )
    if reference_n:
        ref = reference.reference_run(threads=4, n=reference_n, agents=4)
        line += (
            f"; reference over 4 agents {ref.rate:,.0f}/s, p99 {ref.p99 * 1000:.1f} ms "
            f"({count / wall / ref.rate:.2f}×)"
        )
    print(line)


def bare_transfer(debit: int, credit: int) -> Callable[[int], None]:
    """Lock two accounts, update both balances, record one transfer: the floor under any
    money-moving transaction, in plain SQL."""
    accounts, transfers = Account._meta.db_table, Transfer._meta.db_table

    def move(_: int) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, balance FROM {accounts} WHERE id IN (%s, %s) "
                "ORDER BY id FOR NO KEY UPDATE",
                [debit, credit],
            )
            cursor.fetchall()
            cursor.execute(f"UPDATE {accounts} SET balance = balance - 1 WHERE id = %s", [debit])
            cursor.execute(f"UPDATE {accounts} SET balance = balance + 1 WHERE id = %s", [credit])
            cursor.execute(
                f"INSERT INTO {transfers} (debit_account_id, credit_account_id, amount, kind, "
                "memo, created_at) VALUES (%s, %s, 1, 'deposit', 'benchmark: bare SQL', now())",
                [debit, credit],
            )

    return move


def breakdown_rows(
    timer: StatementTimer, commits: list[float], total: float, count: int
) -> list[list[str]]:
    rows = []
    sql_time = 0.0
    for kind, (n, spent) in sorted(timer.kinds.items(), key=lambda item: -item[1][1]):
        sql_time += spent
        rows.append([kind, f"{n / count:.1f}", ms(spent / count), f"{spent / total:.0%}"])
    committed = sum(commits)
    rows.append(["COMMIT", f"{len(commits) / count:.1f}", ms(committed / count)])
    rows[-1].append(f"{committed / total:.0%}")
    rest = total - sql_time - committed
    rows.append(["Python between statements", "", ms(rest / count), f"{rest / total:.0%}"])
    statements = sum(n for n, _ in timer.kinds.values()) + len(commits)
    rows.append(["whole settlement", f"{statements / count:.1f}", ms(total / count), "100%"])
    return rows


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per worker run (300)")
    parser.add_argument("--paced", type=int, default=40, help="tasks sent one at a time (40)")
    parser.add_argument(
        "--settlements", type=int, default=200, help="per timing mode and round (200)"
    )
    parser.add_argument("--transfers", type=int, default=1000, help="bare SQL transfers (1000)")
    parser.add_argument(
        "--reference", type=int, default=1000, help="reference settlements per run (1000)"
    )
    parser.add_argument("--e2e", type=int, default=300, help="tasks through the API (300)")
    args = parser.parse_args()

    database_prepare()
    world = world_create()
    print(f"{platform()}; agent {world.agent.slug} (echo), input {len(INPUT)} bytes")

    # 1. Real workers: throughput, queue wait, run time.
    cores = os.cpu_count() or 1
    runs = [cluster_run(world, workers, args.tasks, args.paced) for workers in sorted({1, cores})]
    table(
        f"Worker throughput: {args.tasks} echo tasks queued, then `qcluster` started "
        "(startup = start → first task claimed)",
        ["workers", "startup s", "wall s", "tasks/s", "tasks/s excl. startup", "failed"],
        [
            [
                str(r.workers),
                f"{r.startup:.2f}",
                f"{r.wall:.2f}",
                f"{r.rate:.1f}",
                f"{r.rate_warm:.1f}",
                str(r.failed),
            ]
            for r in runs
        ],
    )
    latency_rows = []
    for r in runs:
        w = f"{r.workers}w"
        for label, values in [
            (f"queue wait, backlog ({w})", r.queue_wait),
            (f"queue wait, one at a time ({w})", r.paced_wait),
            (f"run, sandbox elapsed_ms ({w})", r.run),
            (f"claim → result, before settling ({w})", r.in_worker),
            (f"enqueued → final, one at a time ({w})", r.paced_latency),
        ]:
            p50, p95, p99 = percentiles(values)
            latency_rows.append([label, str(len(values)), ms(p50), ms(p95), ms(p99)])
    table(
        "Task timings, ms (backlog: all queued before the cluster started; one at a time: "
        "sent every 50 ms to the warm cluster)",
        ["", "n", "p50", "p95", "p99"],
        latency_rows,
    )

    # 2. The settlement transaction, in-process, against a bare SQL transfer.
    warm = claimed(world, 20)
    first_task, execution = first_execution(warm[0])
    settle = settler(execution)
    for claim in warm:
        settle(claim)
    # Rounds of ours then the reference, the faster of each kept (settlement.py).
    best, refs = settlement_rounds(world, settle, args.settlements, args.reference)
    why_not = reference.missing()
    (settle_1, wall_1), (settle_4, wall_4) = best[1], best[4]
    move = bare_transfer(external_account_id(), world.bare_wallet)
    for i in range(20):
        move(i)
    bare_1, bare_wall_1 = timed_threads([range(args.transfers)], move)
    bare_4, bare_wall_4 = timed_threads(split(range(args.transfers), 4), move)
    table(
        "Settlement transaction (task_settle of a successful escrow-paid echo task: result, "
        "3 transfers, escrow, reputation, receipt) vs a bare SQL transfer "
        "(lock 2 accounts, 2 UPDATEs, 1 INSERT), ms",
        ["", "n", "p50", "p95", "p99", "per s"],
        [
            timing_row("task_settle, 1 thread", settle_1, wall_1),
            timing_row("task_settle, 4 threads", settle_4, wall_4),
            timing_row("bare SQL transfer, 1 thread", bare_1, bare_wall_1),
            timing_row("bare SQL transfer, 4 threads", bare_4, bare_wall_4),
            *[
                [
                    f"reference settlement (raw psycopg), {t} thread{'s' * (t > 1)}",
                    str(ref.n),
                    ms(ref.p50),
                    ms(ref.p95),
                    ms(ref.p99),
                    f"{ref.rate:,.0f}",
                ]
                for t, ref in refs.items()
            ],
        ],
    )
    for threads, ours, bare, ours_wall, bare_wall in [
        (1, settle_1, bare_1, wall_1, bare_wall_1),
        (4, settle_4, bare_4, wall_4, bare_wall_4),
    ]:
        (o50, _, o99), (b50, _, b99) = percentiles(ours), percentiles(bare)
        slower = (len(bare) / bare_wall) / (len(ours) / ours_wall)
        print(
            f"settlement / bare, {threads} thread{'s' * (threads > 1)}: p50 × {o50 / b50:.1f}, "
            f"p99 × {o99 / b99:.1f}, throughput ÷ {slower:.1f}"
        )
    verdicts = []
    for threads, durations in [(1, settle_1), (4, settle_4)]:
        p99 = percentiles(durations)[2]
        verdicts.append(
            f"{threads} thread{'s' * (threads > 1)} {ms(p99)} ms, "
            + ("met" if p99 < P99_TARGET_MS / 1000 else "NOT met")
        )
    print(f"target settlement p99 < {P99_TARGET_MS} ms: " + "; ".join(verdicts))
    print(
        "(the 4 threads share one process and its GIL, and every settlement here writes the "
        "same requester wallet and agent reputation row: one agent's settlements take turns "
        "on that row, the reference's too)"
    )
    spread_run(world, settle, args.settlements, args.reference if why_not is None else 0)

    # Where a settlement's time goes: every statement and commit timed, one thread.
    sample = claimed(world, 100)
    with statement_breakdown() as (timer, commits):
        began = time.perf_counter()
        for claim in sample:
            settle(claim)
        total = time.perf_counter() - began
    table(
        f"Where a settlement's time goes ({len(sample)} settlements, 1 thread, "
        "each statement timed; the timing adds a little)",
        ["statement", "per settlement", "ms each settlement", "share"],
        breakdown_rows(timer, commits, total, len(sample)),
    )

    # 3. The whole pipeline against the sandbox alone.
    binary = world.agent.current_binary
    assert binary is not None
    limits = sandbox.Limits.for_task(
        fuel=execution.fuel_limit,
        memory_mb=first_task.memory_limit_mb,
        timeout_ms=first_task.timeout_ms,
    )

    def sandbox_once(_: int) -> None:
        result = sandbox.run(
            sha256=binary.sha256,
            load=lambda: binary_read(binary),
            stdin=INPUT.encode(),
            argv=[world.agent.slug],
            limits=limits,
        )
        assert result.ok, result

    sandbox_once(0)
    runs_only, runs_wall = timed_threads([range(args.tasks)], sandbox_once)
    one = runs[0]
    per_task = one.wall / one.tasks
    per_task_warm = (one.wall - one.startup) / one.tasks
    per_run = runs_wall / len(runs_only)
    table(
        "Per-task cost: the whole pipeline (1 worker) vs sandbox.run alone (module cached)",
        ["", "ms per task", "× sandbox"],
        [
            ["sandbox.run, echo, same input", ms(per_run), "1.0"],
            ["end to end, 1 worker (wall / N)", ms(per_task), f"{per_task / per_run:.0f}"],
            [
                "end to end, 1 worker, excl. startup",
                ms(per_task_warm),
                f"{per_task_warm / per_run:.0f}",
            ],
            [
                "  of which settlement (p50, in-process)",
                ms(percentiles(settle_1)[0]),
                f"{percentiles(settle_1)[0] / per_run:.0f}",
            ],
        ],
    )

    # 4. Round trips per money path.
    table(
        "Round trips to the database per path (statements counted with "
        "CaptureQueriesContext, BEGIN and COMMIT included; settlements as the worker "
        "makes them, with the task and escrow it read, unless said otherwise)",
        ROUND_TRIP_HEADERS,
        round_trip_rows(world.owner, world.requester, world.agent),
    )

    # 5. End to end as in production: API submit → settled.
    e2e = end_to_end(world.requester, world.agent, args.e2e)
    end_to_end_table(e2e)
    # 6. Tasks submitted through batches (SPEC §20), no worker running them.
    batches = batches_run(world.agent)

    audit(
        lambda report: f"{report.escrows} escrows, {report.held_in_escrow} µCR held in escrow",
        lead="\n",
    )
    print()
    settlement_summary(best, refs)
    submission_summary(e2e, batches)


if __name__ == "__main__":
    main()
