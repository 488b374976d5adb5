"""Where the pipeline's Python time goes: cProfile over N API submissions and N worker runs.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/profile_pipeline.py [--n N]

In-process, DEBUG off: `POST /api/v1/tasks/` through Django's test client (token auth,
the whole middleware stack and DRF), then `task_execute` for each submitted task (claim →
checks → sandbox → settle → after-commit hooks), each phase profiled alone. Prints ms per
task, statements per task, and the top functions by own time and by cumulative time.
Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BUDGET, INPUT, database_prepare, echo_agent, platform

# isort: split
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from execution.services import task_execute


def profiled(label: str, action: Callable[[], object], n: int, top: int, dump: str | None) -> None:
    profile = cProfile.Profile()
    with CaptureQueriesContext(connection) as captured:
        began = time.perf_counter()
        profile.enable()
        for _ in range(n):
            action()
        profile.disable()
        wall = time.perf_counter() - began
    if dump:
        profile.dump_stats(f"{dump}-{label.split()[0].strip('/').replace('/', '_')}.prof")
    print(
        f"\n== {label}: {wall / n * 1000:.2f} ms each under the profiler, "
        f"{len(captured.captured_queries) / n:.1f} statements each"
    )
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(order).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print(f"-- by {order}")
        print("\n".join(lines[start : start + top + 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="tasks per phase (200)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (25)")
    parser.add_argument("--dump", help="also save each profile as DUMP-<phase>.prof")
    args = parser.parse_args()
    database_prepare()
    print(platform())
    _, requester, agent = echo_agent()
    client = Client(headers={"authorization": f"Token {Token.objects.create(user=requester)}"})
    body = json.dumps({"agent": agent.slug, "input": INPUT, "budget": BUDGET})
    ids: list[str] = []

    def submit() -> None:
        response = client.post(
            "/api/v1/tasks/", body, content_type="application/json", HTTP_HOST="127.0.0.1"
        )
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])

    for _ in range(20):  # warm-up: imports, caches, the compiled module
        submit()
    for task_id in ids:
        task_execute(task_id=task_id)
    ids.clear()
    profiled("POST /api/v1/tasks/ (test client)", submit, args.n, args.top, args.dump)
    pending = iter(list(ids))

    def execute() -> None:
        task_execute(task_id=next(pending))

    profiled("task_execute (worker path)", execute, args.n, args.top, args.dump)


if __name__ == "__main__":
    main()
