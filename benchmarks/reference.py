"""The yardstick: the raw-SQL reference settlement (`../shared/bench/ref_settlement.py` from
the repository root, or the file `BENCH_REFERENCE` names), run on this run's PostgreSQL.

It creates its own `r_*` tables in the same database and drops them when it is done.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT = BASE_DIR.parent / "shared" / "bench" / "ref_settlement.py"
LINE = re.compile(
    r"= (?P<rate>[\d.]+)/s with (?P<threads>\d+) threads; "
    r"p50 (?P<p50>[\d.]+) ms p95 (?P<p95>[\d.]+) ms p99 (?P<p99>[\d.]+) ms"
)


@dataclass(frozen=True)
class Reference:
    threads: int
    n: int
    rate: float  # settlements per second
    p50: float  # seconds
    p95: float
    p99: float


def reference_path() -> Path:
    return Path(os.environ.get("BENCH_REFERENCE") or DEFAULT)


def missing() -> str | None:
    """Why the reference cannot run, or None when it can."""
    path = reference_path()
    if path.is_file():
        return None
    return (
        f"reference settlement not found at {path} (the repository's "
        "../shared/bench/ref_settlement.py); set BENCH_REFERENCE to its path to compare"
    )


def reference_run(*, threads: int, n: int, agents: int = 1) -> Reference:
    """Run the reference on DATABASE_URL (the same throwaway PostgreSQL) and read its line."""
    command = [
        sys.executable,
        str(reference_path()),
        "--dsn",
        os.environ["DATABASE_URL"],
        "--n",
        str(n),
        "--threads",
        str(threads),
        "--agents",
        str(agents),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    found = LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the reference settlement failed:\n{done.stdout}\n{done.stderr}")
    subprocess.run(
        [sys.executable, "-c", _DROP, os.environ["DATABASE_URL"]], check=False, timeout=60
    )
    return Reference(
        threads=threads,
        n=n,
        rate=float(found["rate"]),
        p50=float(found["p50"]) / 1000,
        p95=float(found["p95"]) / 1000,
        p99=float(found["p99"]) / 1000,
    )


_DROP = (
    "import sys, psycopg\n"
    "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
    "    c.execute('DROP TABLE IF EXISTS r_receipt, r_rep_event, r_rep, r_transfer, r_escrow, "
    "r_task, r_account CASCADE')\n"
)
