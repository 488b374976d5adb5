"""What the PostgreSQL benchmarks share: the refusal to run on anything else, Django set up
on a queue of the run's own, the figures and tables they print, and timed settlements.

Importing this module sets Django up, so a benchmark imports it before any model.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent
ECHO = BASE_DIR / "agents" / "dist" / "echo.wasm"
RUN_ID = uuid.uuid4().hex[:8]


def require_postgres() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgresql://", "postgres://")):
        script = Path(sys.argv[0]).name
        sys.exit(
            "This benchmark needs PostgreSQL: DATABASE_URL must be a postgresql:// URL "
            f"(got {'nothing' if not url else url.split(':', 1)[0] + '://…'}).\n"
            "Run it on a throwaway cluster:\n"
            f"    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/{script}"
        )


require_postgres()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
# Loaded in development mode (keys generated into the data directory, as the tests do);
# the measured process then runs with DEBUG off.
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# A queue of this run's own: workers started by a benchmark take only its messages, and
# the messages of the tasks settled in-process are purged at the end.
os.environ["QUEUE_NAME"] = f"bench-{RUN_ID}"
# One requester submits whole batches here: the abuse limit would refuse them.
os.environ.setdefault("MAX_TASKS_IN_FLIGHT", "1000000")
# …and the submission rate would refuse the figures (a batch counts each of its tasks).
os.environ.setdefault("TASK_SUBMIT_RATE", "10000000/minute")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from escrow.audit import LedgerReport, ledger_audit  # noqa: E402
from escrow.models import Escrow  # noqa: E402
from escrow.services import deposit_create  # noqa: E402
from execution.services import Execution, run_in_sandbox, task_claim, task_settle  # noqa: E402
from marketplace.binaries import binary_upload  # noqa: E402
from marketplace.models import Agent, Task  # noqa: E402
from marketplace.services import agent_create, user_create  # noqa: E402

INPUT = "hello, agent exchange"
BUDGET = 50_000  # µCR; an echo run costs about the base fee
FUNDS = 1_000 * 1_000_000
T = TypeVar("T")


class Claim(NamedTuple):
    """A claimed task, as the worker holds it when it settles: the task row its claim
    returned, and its escrow row, read before the run."""

    task_id: Any
    attempt: int
    task: Task
    escrow: Escrow


# --- the run's database and its world ------------------------------------------------------


def database_prepare() -> None:
    """Migrate; then DEBUG off, as in production, so Django keeps no query log."""
    call_command("migrate", verbosity=0)
    settings.DEBUG = False


def platform() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (server,) = cursor.fetchone()
    return f"PostgreSQL {server}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"


def echo_agent() -> tuple[User, User, Agent]:
    """This run's agent owner, its requester (funded with FUNDS) and its echo agent."""
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
    return owner, requester, agent


def external_account_id() -> int:
    """The external system account (its first shard where system accounts are sharded)."""
    from escrow.models import Account
    from escrow.services import system_account_id

    lookup: Any = system_account_id
    try:
        return int(lookup(Account.Kind.EXTERNAL, 0))
    except TypeError:  # one row per system account
        return int(lookup(Account.Kind.EXTERNAL))


def audit(details: Callable[[LedgerReport], str], *, lead: str = "") -> None:
    """Purge this run's queue (the messages of the tasks settled in-process), audit the
    ledger and print the verdict; exit 1 when it fails."""
    for queue in (settings.TASK_QUEUE, settings.SERVICE_QUEUE):
        get_broker(queue).purge_queue()
    report = ledger_audit()
    status = "ok" if report.ok else "FAILED: " + "; ".join(report.violations[:5])
    print(
        f"{lead}ledger audit: {status} ({report.accounts} accounts, "
        f"{report.transfers} transfers, {details(report)})"
    )
    if not report.ok:
        sys.exit(1)


def production_env() -> dict[str, str]:
    """The environment of a production-like process (DEBUG off: no query log, no dev
    keys) on this run's database, with the keys this process generated for development."""
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "CUSTODIAL_KEY_RING": ",".join(settings.CUSTODIAL_KEY_RING),
        "WEBHOOK_KEY_RING": ",".join(settings.WEBHOOK_KEY_RING),
        "RECEIPT_SIGNING_KEYS": ",".join(settings.RECEIPT_SIGNING_KEYS),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "LOG_LEVEL": "WARNING",
    }


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
    """n, p50/p95/p99 in ms, and calls per second over `wall` (else over their sum)."""
    p50, p95, p99 = percentiles(seconds)
    rate = len(seconds) / (wall if wall is not None else sum(seconds))
    return [label, str(len(seconds)), ms(p50), ms(p95), ms(p99), f"{rate:,.0f}"]


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


def claim_task(task_id: Any) -> Claim:
    """Claim a submitted task (running, attempt 1), ready to be settled, and read its
    escrow: what `task_execute` does before the run, so a timed settlement starts where
    the worker's does."""
    claimed = task_claim(task_id=task_id)
    assert claimed is not None
    task, attempt = claimed
    return Claim(task_id, attempt, task, Escrow.objects.get(task_id=task_id))


def first_execution(claim: Claim) -> tuple[Task, Execution]:
    """The claimed task and its sandbox run: the result every timed settlement reuses."""
    task = Task.objects.select_related("agent", "binary").get(pk=claim[0])
    execution = run_in_sandbox(task)
    assert execution.succeeded, execution
    return task, execution


def settler(execution: Execution) -> Callable[[Claim], None]:
    def settle(claim: Claim) -> None:
        task_id, attempt, task, escrow = claim
        if not task_settle(
            task_id=task_id, attempt=attempt, execution=execution, task=task, escrow=escrow
        ):
            raise RuntimeError(f"task {task_id} did not settle")

    return settle


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
