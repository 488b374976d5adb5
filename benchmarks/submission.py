"""Submission figures (SPEC §20): end to end through `POST /api/v1/tasks/` and tasks
submitted per second through batches, with their tables and the two lines `make bench` ends
with. `e2e.py` prints them after its own; run alone, this script measures only these two:

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/submission.py [--e2e N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import audit, database_prepare, ms, percentiles, platform, table

# isort: split
from benchmarks.batches import Batches, batch_submission
from benchmarks.cluster_runs import world_create
from benchmarks.web import EndToEnd, end_to_end
from marketplace.models import Agent

E2E_TARGET = 200  # tasks/s end to end on 2 cores
BATCH_TARGET = 2_000  # tasks/s submitted through batches


def end_to_end_table(e2e: EndToEnd) -> None:
    p50, p95, p99 = percentiles(e2e.submit)
    table(
        f"End to end: {e2e.tasks} echo tasks POSTed to /api/v1/tasks/ by {e2e.clients} "
        f"client threads; gunicorn with {e2e.web_workers} sync workers, qcluster with "
        f"{e2e.q_workers} workers, DEBUG off (after a warm-up)",
        ["", "n", "p50 ms", "p95 ms", "p99 ms", "per s"],
        [
            [
                "submission (HTTP request)",
                str(len(e2e.submit)),
                ms(p50),
                ms(p95),
                ms(p99),
                f"{len(e2e.submit) / e2e.submit_wall:,.1f}",
            ],
            ["submitted → all settled", str(e2e.tasks), "", "", "", f"{e2e.rate:,.1f}"],
        ],
    )
    if e2e.failed:
        print(f"{e2e.failed} of the end-to-end tasks did not succeed")


def batches_run(agent: Agent) -> Batches:
    batches = batch_submission(agent)
    p50, p95, p99 = percentiles(batches.latencies)
    table(
        f"Batch submission: {batches.tasks} echo tasks in batches of {batches.size} POSTed to "
        f"/api/v1/tasks/batch/ by {batches.clients} client threads; gunicorn as above, no "
        "worker running them",
        ["", "n", "p50 ms", "p95 ms", "p99 ms", "tasks per s"],
        [
            [
                "batch (HTTP request)",
                str(len(batches.latencies)),
                ms(p50),
                ms(p95),
                ms(p99),
                f"{batches.rate:,.0f}",
            ]
        ],
    )
    return batches


def submission_summary(e2e: EndToEnd, batches: Batches) -> None:
    """The last two lines of `make bench`, each with its target and verdict."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"end to end: {e2e.rate:.0f} tasks/s "
        f"(target ≥ {E2E_TARGET}: {verdict(e2e.rate >= E2E_TARGET)})"
    )
    print(
        f"batch submission: {batches.rate:,.0f} tasks/s "
        f"(target ≥ {BATCH_TARGET:,}: {verdict(batches.rate >= BATCH_TARGET)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--e2e", type=int, default=300, help="tasks through the API (300)")
    args = parser.parse_args()
    database_prepare()
    world = world_create()
    print(platform())
    e2e = end_to_end(world.requester, world.agent, args.e2e)
    end_to_end_table(e2e)
    batches = batches_run(world.agent)
    audit(
        lambda report: f"{report.escrows} escrows, {report.held_in_escrow} µCR held in escrow",
        lead="\n",
    )
    print()
    submission_summary(e2e, batches)


if __name__ == "__main__":
    main()
