"""End-to-end figures on PostgreSQL: worker throughput with 1 and 4 workers, queue wait and
run time, the settlement transaction against a bare SQL transfer, and the per-task cost
of the whole pipeline against a sandbox-only run.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/e2e.py [--tasks N]

Needs DATABASE_URL pointing at PostgreSQL; migrates it, creates its own users and agent,
and starts real `manage.py qcluster` processes on a queue of its own. Prints tables;
asserts nothing about timings. Ends with the ledger audit. Target (SPEC §12): settlement
p99 < 25 ms.

In this process DEBUG is off, as in production, so Django keeps no query log.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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
            "    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/e2e.py"
        )


require_postgres()
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# A queue of this run's own: the workers started here take only its messages, and the
# messages of tasks settled in-process are purged at the end.
os.environ["Q_CLUSTER_NAME"] = f"bench-{RUN_ID}"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from escrow.audit import ledger_audit  # noqa: E402
from escrow.models import Account, Transfer  # noqa: E402
from escrow.services import deposit_create, system_account_id, wallet_id  # noqa: E402
from execution import sandbox  # noqa: E402
from execution.services import Execution, run_in_sandbox, task_claim, task_settle  # noqa: E402
from marketplace.binaries import binary_read, binary_upload  # noqa: E402
from marketplace.models import Agent, Task  # noqa: E402
from marketplace.services import agent_create, task_submit, user_create  # noqa: E402

INPUT = "hello, agent exchange"
BUDGET = 50_000  # µCR; an echo run costs about the base fee
FUNDS = 1_000 * 1_000_000
T = TypeVar("T")


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


def timing_row(label: str, seconds: Sequence[float], wall: float | None = None) -> list[str]:
    p50, p95, p99 = percentiles(seconds)
    rate = len(seconds) / (wall if wall is not None else sum(seconds))
    return [label, str(len(seconds)), ms(p50), ms(p95), ms(p99), f"{rate:,.0f}"]


# --- the world this run works in ---------------------------------------------------------


@dataclass(frozen=True)
class World:
    requester: User
    agent: Agent
    bare_wallet: int  # credited by the bare SQL transfers


def world_create() -> World:
    owner = user_create(username=f"bench-owner-{RUN_ID}")
    requester = user_create(username=f"bench-requester-{RUN_ID}")
    bare = user_create(username=f"bench-bare-{RUN_ID}")
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
    return World(requester=requester, agent=agent, bare_wallet=wallet_id(user_id=bare.pk))


def submit(world: World, count: int) -> list[Any]:
    return [
        task_submit(requester=world.requester, agent=world.agent, input=INPUT, budget=BUDGET).pk
        for _ in range(count)
    ]


# --- workers -------------------------------------------------------------------------------


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Cluster:
    """`manage.py qcluster` with `workers` worker processes, in its own process group."""

    def __init__(self, workers: int) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(settings.DATA_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "Q_WORKERS": str(workers),
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the cluster)
            prefix="bench-qcluster-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Cluster:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def wait_final(self, ids: Sequence[Any], timeout: float = 150) -> float:
        """Poll until every task is final; the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count()
            if done == len(ids):
                return time.monotonic()
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.02)
        tail = Path(self.log.name).read_text(errors="replace")[-3000:]
        sys.exit(f"the workers did not finish {len(ids)} tasks in time; worker log:\n{tail}")


@dataclass
class ClusterRun:
    workers: int
    tasks: int
    startup: float  # cluster start → first task claimed
    wall: float  # cluster start → all tasks final
    failed: int
    queue_wait: list[float]
    run: list[float]  # elapsed_ms as the sandbox reported it
    in_worker: list[float]  # claim → result computed (started_at → finished_at)
    paced_wait: list[float]
    paced_latency: list[float]  # enqueued → finished, one task at a time

    @property
    def rate(self) -> float:
        return self.tasks / self.wall

    @property
    def rate_warm(self) -> float:
        return self.tasks / (self.wall - self.startup)


def _rows(ids: Sequence[Any]) -> list[tuple[str, datetime, datetime, datetime, int | None]]:
    rows = []
    for status, enqueued, started, finished, elapsed in Task.objects.filter(pk__in=ids).values_list(
        "status", "enqueued_at", "started_at", "finished_at", "elapsed_ms"
    ):
        assert enqueued and started and finished, "a final task has all its timestamps"
        rows.append((status, enqueued, started, finished, elapsed))
    return rows


def cluster_run(world: World, workers: int, tasks: int, paced: int) -> ClusterRun:
    """A backlog of `tasks` for a cold cluster; then `paced` tasks one at a time."""
    ids = submit(world, tasks)
    with Cluster(workers) as cluster:
        started_at = timezone.now()
        started = time.monotonic()
        ended = cluster.wait_final(ids)
        paced_ids = []
        for _ in range(paced):
            paced_ids += submit(world, 1)
            time.sleep(0.05)
        if paced_ids:
            cluster.wait_final(paced_ids)
    rows = _rows(ids)
    first = min(row[2] for row in rows)
    paced_rows = _rows(paced_ids)
    return ClusterRun(
        workers=workers,
        tasks=tasks,
        startup=(first - started_at).total_seconds(),
        wall=ended - started,
        failed=sum(row[0] != Task.Status.SUCCEEDED for row in rows + paced_rows),
        queue_wait=[(row[2] - row[1]).total_seconds() for row in rows],
        run=[(row[4] or 0) / 1000 for row in rows],
        in_worker=[(row[3] - row[2]).total_seconds() for row in rows],
        paced_wait=[(row[2] - row[1]).total_seconds() for row in paced_rows],
        paced_latency=[(row[3] - row[1]).total_seconds() for row in paced_rows],
    )


# --- in-process timings --------------------------------------------------------------------


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


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    return [list(items[i::parts]) for i in range(parts)]


def claimed(world: World, count: int) -> list[tuple[Any, int]]:
    """`count` fresh tasks, claimed (running, attempt 1), ready to be settled."""
    claims = []
    for task_id in submit(world, count):
        claim = task_claim(task_id=task_id)
        assert claim is not None
        claims.append((task_id, claim[1]))
    return claims


def settler(execution: Execution) -> Callable[[tuple[Any, int]], None]:
    def settle(claim: tuple[Any, int]) -> None:
        task_id, attempt = claim
        if not task_settle(task_id=task_id, attempt=attempt, execution=execution):
            raise RuntimeError(f"task {task_id} did not settle")

    return settle


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
def statement_breakdown() -> Iterator[tuple[StatementTimer, list[float]]]:
    """Time every statement and every COMMIT of this thread's connection."""
    timer, commits = StatementTimer(), []
    commit = connection.commit

    def timed_commit() -> None:
        began = time.perf_counter()
        commit()
        commits.append(time.perf_counter() - began)

    connection.commit = timed_commit  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(timer):
            yield timer, commits
    finally:
        del connection.commit


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
    parser.add_argument("--settlements", type=int, default=300, help="per timing mode (300)")
    parser.add_argument("--transfers", type=int, default=1000, help="bare SQL transfers (1000)")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    settings.DEBUG = False
    world = world_create()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (server,) = cursor.fetchone()
    print(
        f"PostgreSQL {server}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"agent {world.agent.slug} (echo), input {len(INPUT)} bytes"
    )

    # 1. Real workers: throughput, queue wait, run time.
    runs = [cluster_run(world, workers, args.tasks, args.paced) for workers in (1, 4)]
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
    first_task = Task.objects.select_related("agent", "binary").get(pk=warm[0][0])
    execution = run_in_sandbox(first_task)
    assert execution.succeeded, execution
    settle = settler(execution)
    for claim in warm:
        settle(claim)
    single = claimed(world, args.settlements)
    multi = claimed(world, args.settlements)
    settle_1, wall_1 = timed_threads([single], settle)
    settle_4, wall_4 = timed_threads(split(multi, 4), settle)
    move = bare_transfer(system_account_id(Account.Kind.EXTERNAL), world.bare_wallet)
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
            + ("met" if p99 < 0.025 else "NOT met")
        )
    print("target settlement p99 < 25 ms: " + "; ".join(verdicts))
    print(
        "(the 4 threads share one process, and every settlement here locks the same escrow "
        "and platform-fee accounts, requester wallet and agent reputation row)"
    )

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

    get_broker().purge_queue()  # messages of the tasks settled in-process
    report = ledger_audit()
    status = "ok" if report.ok else "FAILED: " + "; ".join(report.violations[:5])
    print(
        f"\nledger audit: {status} ({report.accounts} accounts, {report.transfers} transfers, "
        f"{report.escrows} escrows, {report.held_in_escrow} µCR held in escrow)"
    )
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
