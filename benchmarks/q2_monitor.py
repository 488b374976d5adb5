"""What django-q2's monitor spends on each finished task, by `save_limit`.

    .venv/bin/python tests/pgcluster.py -- .venv/bin/python benchmarks/q2_monitor.py [--n N]

The monitor is one process per cluster: it saves every result and acknowledges every
message, so its time per task bounds the cluster's throughput however many workers run.
With a positive `save_limit` it locks and reads every kept result to prune one; with -1
(our setting) it keeps no successful result. Times `save_task` + the acknowledgement, with
the kept results at the limit. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import database_prepare, platform

# isort: split
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Task as QTask
from django_q.monitor import save_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="results per setting (200)")
    parser.add_argument("--kept", type=int, default=500, help="the positive limit (500)")
    args = parser.parse_args()
    database_prepare()
    print(platform())
    broker = get_broker()

    def finished() -> dict:
        now = timezone.now()
        return {
            "id": uuid.uuid4().hex,
            "name": uuid.uuid4().hex[:20],
            "func": "execution.tasks.run_task",
            "args": (str(uuid.uuid4()),),
            "kwargs": {},
            "started": now,
            "stopped": now,
            "result": "attempt 1: succeeded",
            "success": True,
            "group": None,
            "cluster": "bench",
            "ack_id": broker.enqueue("bench"),
        }

    def per_task(limit: int, n: int) -> float:
        Conf.SAVE_LIMIT = limit
        packages = [finished() for _ in range(n)]
        began = time.perf_counter()
        for package in packages:
            save_task(package, broker)
            broker.acknowledge(package.pop("ack_id"))
        return (time.perf_counter() - began) / n * 1000

    QTask.objects.all().delete()
    per_task(0, args.kept)  # kept results at the limit
    for _ in range(2):
        for limit in (args.kept, -1):
            print(f"save_limit {limit:>5}: {per_task(limit, args.n):6.2f} ms a task (save + ack)")
    QTask.objects.all().delete()


if __name__ == "__main__":
    main()
