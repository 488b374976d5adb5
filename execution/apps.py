from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from execution.heartbeat import heartbeat_start

        # Sent in every q2 worker process once it is forked (and again for a reincarnated one).
        post_spawn.connect(heartbeat_start, dispatch_uid="execution.heartbeat")
