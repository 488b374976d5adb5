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
