"""Settlement against the raw-SQL reference (SPEC §20): settlements/s at 1 thread and at 4
threads on one agent, each against the reference run on the same PostgreSQL, and the p99
at 4 threads. `e2e.py` measures this as its part 2 and ends with these lines; alone:

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/settlement.py

Every settlement here is a successful escrow-paid echo task of one agent and one
requester (the result of one real sandbox run, reused), settled in-process as the worker
settles it. Three rounds of each, ours then the reference, the faster of each kept: the
machine is shared, and noise only ever slows a run down. Ends with the ledger audit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import (
    Claim,
    audit,
    claim_task,
    database_prepare,
    first_execution,
    percentiles,
    platform,
    settler,
    table,
    timed_threads,
    timing_row,
)

# isort: split
from benchmarks import reference
from benchmarks.cluster_runs import World, submit, world_create

T = TypeVar("T")
# SPEC §20: settlements/s against the reference, 1 thread and 4 on one agent; p99, ms.
TARGETS = {1: 1.0, 4: 0.9}
P99_TARGET_MS = 15
ROUNDS = 3


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    return [list(items[i::parts]) for i in range(parts)]


def claimed(world: World, count: int) -> list[Claim]:
    """`count` fresh tasks, claimed (running, attempt 1), ready to be settled."""
    return [claim_task(task_id) for task_id in submit(world, count)]


Timings = dict[int, tuple[list[float], float]]  # threads → (each settlement's s, wall s)


def settlement_rounds(
    world: World, settle: Callable[[Claim], None], count: int, reference_n: int
) -> tuple[Timings, dict[int, reference.Reference]]:
    """`count` settlements with 1 thread and with 4, and the reference's `reference_n`
    (unless it is missing: it says why), ROUNDS rounds each, the faster of each kept."""
    why_not = reference.missing()
    if why_not is not None:
        print(why_not)
    best: Timings = {}
    refs: dict[int, reference.Reference] = {}
    for _ in range(ROUNDS):
        for threads in (1, 4):
            claims = claimed(world, count)
            durations, wall = timed_threads(split(claims, threads), settle)
            if threads not in best or wall < best[threads][1]:
                best[threads] = (durations, wall)
            if why_not is None:
                ref = reference.reference_run(threads=threads, n=reference_n)
                if threads not in refs or ref.rate > refs[threads].rate:
                    refs[threads] = ref
    return best, refs


def settlement_summary(best: Timings, refs: dict[int, reference.Reference]) -> None:
    """The settlement lines `make bench` ends with, each with its target and verdict."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for threads, (durations, wall) in sorted(best.items()):
        label = f"settlement vs reference, {threads} thread{'s' * (threads > 1)}"
        if threads not in refs:
            print(f"{label}: n/a (reference missing)")
            continue
        ratio = (len(durations) / wall) / refs[threads].rate
        target = TARGETS[threads]
        print(f"{label}: {ratio:.2f}× (target ≥ {target:.2f}×: {verdict(ratio >= target)})")
    p99 = percentiles(best[4][0])[2] * 1000
    print(
        f"settlement p99 at 4 threads: {p99:.1f} ms "
        f"(target < {P99_TARGET_MS} ms: {verdict(p99 < P99_TARGET_MS)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--settlements", type=int, default=400, help="per thread count and round (400)"
    )
    parser.add_argument(
        "--reference", type=int, default=1000, help="reference settlements per run (1000)"
    )
    args = parser.parse_args()
    database_prepare()
    world = world_create()
    print(f"{platform()}; agent {world.agent.slug} (echo)")
    warm = claimed(world, 20)
    _, execution = first_execution(warm[0])
    settle = settler(execution)
    for claim in warm:
        settle(claim)
    best, refs = settlement_rounds(world, settle, args.settlements, args.reference)
    table(
        "Settlement (task_settle of a successful escrow-paid echo task, one agent) vs the "
        "reference settlement (raw psycopg), ms",
        ["", "n", "p50", "p95", "p99", "per s"],
        [
            *[
                timing_row(f"task_settle, {t} thread{'s' * (t > 1)}", durations, wall)
                for t, (durations, wall) in sorted(best.items())
            ],
            *[
                [
                    f"reference settlement, {t} thread{'s' * (t > 1)}",
                    str(ref.n),
                    f"{ref.p50 * 1000:.2f}",
                    f"{ref.p95 * 1000:.2f}",
                    f"{ref.p99 * 1000:.2f}",
                    f"{ref.rate:,.0f}",
                ]
                for t, ref in sorted(refs.items())
            ],
        ],
    )
    audit(lambda report: f"{report.escrows} escrows", lead="\n")
    print()
    settlement_summary(best, refs)


if __name__ == "__main__":
    main()
