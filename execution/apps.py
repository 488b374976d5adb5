from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import post_execute_in_worker, post_spawn, pre_execute

        from execution import liveness
        from execution.deadlines import deadline_sweeper_start
        from execution.heartbeat import heartbeat_start

        # Sent in every q2 worker process once it is forked (and again for a reincarnated one).
        post_spawn.connect(heartbeat_start, dispatch_uid="execution.heartbeat")
        # The deadline sweep, in each worker of the service cluster (execution/deadlines.py).
        post_spawn.connect(deadline_sweeper_start, dispatch_uid="execution.deadlines")
        # Sent in the worker around every job: its progress, which the heartbeat reports.
        pre_execute.connect(liveness.job_started, dispatch_uid="execution.liveness.started")
        post_execute_in_worker.connect(
            liveness.job_finished, dispatch_uid="execution.liveness.finished"
        )
        statement_parse_cached()


# Placeholders psycopg's parse cache takes a statement with (its own limit is 50).
CACHED_PARAMS = 128


def statement_parse_cached() -> None:
    """Let psycopg keep its parse of a settlement's statement (about 100 parameters, under
    its 4 KiB limit): over 50 parameters, psycopg parses the `%s` placeholders again in
    Python for every execution (psycopg._queries), a fifth of a millisecond a settlement
    (benchmarks/settlement.py). Its cache is an LRU of 128 statements; the statements built
    here have a few shapes. A psycopg without the limit is left as it is."""
    try:
        from psycopg import _queries
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return
    limit = getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", None)
    if isinstance(limit, int) and limit < CACHED_PARAMS:
        _queries.MAX_CACHED_STATEMENT_PARAMS = CACHED_PARAMS
