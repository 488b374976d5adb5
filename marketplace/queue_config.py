"""django-q2's settings (`Q_CLUSTER`): the service cluster's, with the task-run cluster's as its
alternative (SPEC §18, marketplace/queues.py). Read by the settings, so it imports nothing
that needs Django set up."""

from __future__ import annotations

from typing import Any

from marketplace.env import env_bool, env_int


def q_cluster_settings(
    *,
    service_queue: str,
    task_queue: str,
    service_workers: int,
    task_workers: int,
    timeout: int,
    retry: int,
    redis_url: str | None,
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "name": service_queue,
        "workers": service_workers,
        "timeout": timeout,
        "retry": retry,
        # The task table (status, attempts, lease) decides retries, not q2.
        "max_attempts": 1,
        "ack_failures": True,
        # No successful result kept (the Task table is the record): a positive limit makes
        # q2's monitor lock and read every kept row to prune one, for every task. Failures
        # are kept.
        "save_limit": env_int("Q_SAVE_LIMIT", -1),
        # Messages a cluster takes ahead of its workers stay locked for `retry` seconds if it
        # dies; keep that hoard small so other machines pick the work up.
        "queue_limit": 2 * service_workers,
        "bulk": 1,
        "catch_up": False,
        # How often an idle ORM-broker cluster looks for work: the floor of a task's wait.
        "poll": 0.1,
        "sync": env_bool("Q_SYNC", False),
        "cache": "q2",  # its status saves stay in the process (marketplace/cache_config.py)
        "ALT_CLUSTERS": {
            # The task-run cluster: its own number of processes, and no scheduler (the
            # service cluster runs the schedules, into its own queue).
            task_queue: {
                "workers": task_workers,
                "queue_limit": 2 * task_workers,
                "scheduler": False,
            },
        },
    }
    if redis_url:
        conf["redis"] = redis_url
    else:
        conf["orm"] = "default"
    return conf
