from __future__ import annotations

from django.db import models


class Receipt(models.Model):
    """The signed record of one finished task (see execution/receipts.py)."""

    task = models.OneToOneField("marketplace.Task", models.PROTECT, related_name="receipt")
    payload = models.TextField()
    signature = models.CharField(max_length=100)
    key_id = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"receipt for {self.task_id}"

    def as_dict(self) -> dict[str, str]:
        return {"payload": self.payload, "signature": self.signature, "key_id": self.key_id}


class WorkerHeartbeat(models.Model):
    """One running qcluster, as its workers last reported it (see execution/heartbeat.py).

    A row per cluster incarnation: `sentinel` is the unique name of the process that guards
    the cluster (reincarnates its workers, runs the schedules); a restarted cluster gets a
    new row. Every host runs its own cluster, so the rows group by `host`.
    """

    sentinel = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField(help_text="process id of the cluster's sentinel")
    cluster = models.CharField(max_length=100, help_text="Q_CLUSTER name (the broker queue)")
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # Liveness by progress (SPEC §18, execution/liveness.py): when a worker of the cluster
    # last started a job (or now, while one is busy within its timeout), and since when
    # messages have sat in the cluster's own queue between its pusher and its workers.
    progress_at = models.DateTimeField(null=True, blank=True)
    queue_waiting_since = models.DateTimeField(null=True, blank=True)
    # The supervisor's name for this launch of the cluster (blank when run unsupervised), and
    # when the supervisor stopped or killed it: a stopped cluster is no longer judged.
    instance = models.CharField(max_length=64, blank=True, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.cluster} on {self.host} (pid {self.pid})"


class RecoveryCount(models.Model):
    """What recovery has done since the start, one row per action (see execution/metrics.py).

    Every recovery run that moved something adds its counts (`requeued`, `resent`, `failed`,
    `errors`) with an UPDATE … SET count = count + n, so runs on several hosts add up; /metrics
    reports the rows as counters.
    """

    action = models.CharField(max_length=16, primary_key=True)
    count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.action}: {self.count}"
