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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Imported first: it refuses anything but PostgreSQL and sets Django up.
from benchmarks.common import (
    BUDGET,
    INPUT,
    Claim,
    audit,
    claim_task,
    database_prepare,
    echo_agent,
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.contrib.auth.models import User

from escrow.channels import channel_close, channel_open, key_register, voucher_message
from escrow.models import PaymentChannel
from marketplace.models import Agent
from marketplace.services import task_submit

BLOCK = 25  # tasks per thread in each alternating block


# --- figures and tables ------------------------------------------------------------------


@dataclass
class Timings:
    durations: list[float] = field(default_factory=list)
    wall: float = 0.0  # summed over the timed blocks

    @property
    def rate(self) -> float:
        return len(self.durations) / self.wall

    def row(self, label: str) -> list[str]:
        return timing_row(label, self.durations, self.wall)


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
    owner, requester, agent = echo_agent()
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
    claims = {kind: [claim_task(task_id) for task_id in task_ids] for kind, task_ids in ids.items()}
    return claims["escrow"], claims["channel"], timings["escrow"], timings["channel"]


# --- timed settlements ---------------------------------------------------------------------


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


def breakdown(claims: list[Claim], settle: Callable[[Claim], None]) -> dict[str, list[float]]:
    with statement_breakdown() as (timer, commits):
        began = time.perf_counter()
        for claim in claims:
            settle(claim)
        total = time.perf_counter() - began
    kinds = dict(timer.kinds)
    if commits:
        kinds["COMMIT"] = [len(commits), sum(commits)]
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

    database_prepare()
    world = world_create(channel_tasks=per_kind)
    print(
        f"{platform()}; agent {world.agent.slug} (echo); budget {BUDGET} µCR a task; "
        f"channel deposit {world.channel.deposit} µCR"
    )

    escrow, channel, submit_escrow_t, submit_channel_t = submit_alternating(world, per_kind)
    _, execution = first_execution(escrow[0])
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
        "(the 4 threads share one process; every settlement here writes the agent's "
        "reputation row, an escrow one also the requester's wallet and a shard of the system "
        "accounts, a channel one the channel row)"
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
    audit(
        lambda report: (
            f"{report.escrows} escrows, {report.channels} channels, "
            f"{report.in_channels} µCR in open channels"
        )
    )


if __name__ == "__main__":
    main()
