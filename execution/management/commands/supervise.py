"""Run a host's two q2 clusters and keep them running: `make run` and the systemd unit run this.

Every host runs one cluster for task runs and one for the service queue (webhooks, dispute
replays, withdrawals, the scheduled jobs; see marketplace/queues.py). Each runs in a session
and process group of its own, and is started again:
- when its main process exits (django-q2's sentinel reincarnates a dead worker, pusher or
  monitor, but nothing restarts the sentinel; once it is killed the main process exits and
  leaves its workers unguarded);
- when it is **stalled**: work it could take has waited WORKER_STALL_SECONDS and it has
  started nothing (execution/liveness.py). A process SIGKILLed while holding one of q2's
  queue locks leaves every process alive and the whole cluster stuck for good (upstream
  django-q2 #23); only killing the whole cluster clears it;
- when it stays silent: no heartbeat for WORKER_STALE_SECONDS (every worker gone).
A stalled or silent cluster is SIGKILLed as a group at once (a graceful stop would wait on the
same lock); a task it held is finished by its lease and recovery, never paid twice.

SIGTERM (systemd's stop with `KillMode=mixed`, or Ctrl-C under `make run`) stops both
clusters in order: each finishes the tasks it holds, within `--grace` seconds, and whatever is
left is killed after that. With `KillMode=control-group` systemd would SIGTERM every process
at once instead, killing the workers mid-task: use `mixed`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from execution.heartbeat import INSTANCE_ENV
from execution.liveness import instance_stopped, instance_verdict

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
# A cluster that ran this long was healthy: the next restart waits the shortest backoff again.
STABLE_SECONDS = 60.0
POLL_SECONDS = 0.1
# How often each cluster's liveness is read from the database.
CHECK_SECONDS = 2.0


def _stop_with_the_supervisor(supervisor: int) -> None:
    """In the child before exec (Linux): SIGTERM the cluster if the supervisor is killed. A
    supervisor that died before the request was made sends nothing: then stop at once."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:
            os._exit(1)


@dataclass
class Supervised:
    """One of the host's clusters: the queue it serves and its current launch."""

    role: str
    queue: str
    process: subprocess.Popen[bytes] | None = None
    instance: str = ""
    started: float = 0.0
    restart_at: float = 0.0
    delay: float = 0.0
    checked: float = field(default=0.0)

    @property
    def running(self) -> bool:
        return self.process is not None


class Command(BaseCommand):
    help = "Run this host's q2 clusters (tasks, service); restart any that dies or stalls."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--backoff",
            type=float,
            default=1.0,
            help="seconds before a restart; doubles while a cluster keeps dying young",
        )
        parser.add_argument("--max-backoff", type=float, default=30.0)
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="seconds a stopping cluster gets to finish its tasks before it is killed "
            "(default: Q_TIMEOUT, the longest a task may run)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.backoff, self.max_backoff = options["backoff"], options["max_backoff"]
        grace = options["grace"] if options["grace"] is not None else float(settings.Q_TIMEOUT)
        self.stopping = False
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        clusters = [
            Supervised("tasks", settings.TASK_QUEUE, delay=self.backoff),
            Supervised("service", settings.SERVICE_QUEUE, delay=self.backoff),
        ]
        while not self.stopping:
            now = time.monotonic()
            for cluster in clusters:
                if self.stopping:
                    break
                if not cluster.running:
                    if now >= cluster.restart_at:
                        self._start(cluster)
                elif self._exited(cluster):
                    code = self._reap(cluster)
                    self._restart_later(cluster, f"exited ({code})")
                elif now - cluster.checked >= CHECK_SECONDS:
                    cluster.checked = now
                    self._check(cluster)
            time.sleep(POLL_SECONDS)
        self._shut_down(clusters, grace)
        self.stderr.write("supervise: stopped")

    # --- one cluster ---------------------------------------------------------------------

    def _start(self, cluster: Supervised) -> None:
        cluster.instance = uuid.uuid4().hex
        env = {
            **os.environ,
            "QUEUE_NAME": settings.QUEUE_NAME,
            # django-q2 picks the queue (and the settings of that cluster) from this.
            "Q_CLUSTER_NAME": cluster.queue,
            INSTANCE_ENV: cluster.instance,
        }
        cluster.process = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
            env=env,
            start_new_session=True,
            # The supervisor runs no threads, so a preexec_fn is safe here.
            preexec_fn=functools.partial(_stop_with_the_supervisor, os.getpid()),
        )
        cluster.started = time.monotonic()
        self.stderr.write(
            f"supervise: started the {cluster.role} cluster on {cluster.queue} "
            f"(pid {cluster.process.pid})"
        )

    def _restart_later(self, cluster: Supervised, why: str) -> None:
        uptime = time.monotonic() - cluster.started
        if uptime >= STABLE_SECONDS:
            cluster.delay = self.backoff
        self.stderr.write(
            f"supervise: the {cluster.role} cluster {why} after {uptime:.1f}s; "
            f"restarting in {cluster.delay:g}s"
        )
        cluster.restart_at = time.monotonic() + cluster.delay
        cluster.delay = min(cluster.delay * 2, self.max_backoff)

    def _check(self, cluster: Supervised) -> None:
        """Kill and restart a stalled cluster, or one that stays silent."""
        try:
            verdict = instance_verdict(cluster.instance)
        except Exception:  # the database is away: nothing can be judged, nothing is killed
            log.warning("supervise: %s cluster's liveness unknown", cluster.role, exc_info=True)
            verdict = "unknown"
        finally:
            connection.close()
        silent_for = time.monotonic() - cluster.started
        if verdict == "stalled":
            why = f"stalled (work waited over {settings.WORKER_STALL_SECONDS}s, nothing started)"
        elif verdict in ("stale", "starting") and silent_for > settings.WORKER_STALE_SECONDS:
            why = f"silent (no heartbeat for {settings.WORKER_STALE_SECONDS}s)"
        else:
            return
        self.stderr.write(
            f"supervise: the {cluster.role} cluster is {why}: killing its process group "
            "and starting it again"
        )
        self._reap(cluster)
        # Not a cluster dying young: it starts again at once, with the shortest backoff.
        cluster.delay, cluster.restart_at = self.backoff, time.monotonic()

    def _exited(self, cluster: Supervised) -> bool:
        """Whether the main process has exited, without reaping it: while it is a zombie its
        pid stays taken, so killing its process group cannot hit anyone else's."""
        assert cluster.process is not None
        found = os.waitid(os.P_PID, cluster.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return found is not None

    def _reap(self, cluster: Supervised) -> int:
        """Kill what the cluster left in its group (orphaned workers), then reap it."""
        assert cluster.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.process.pid, signal.SIGKILL)
        code = cluster.process.wait()
        cluster.process = None
        self._forget(cluster)
        return code

    def _forget(self, cluster: Supervised) -> None:
        """Its heartbeat row is judged no more (a stall is over once the cluster is gone)."""
        try:
            instance_stopped(cluster.instance)
        except Exception:
            log.warning("supervise: could not mark the %s cluster stopped", cluster.role)
        finally:
            connection.close()

    # --- stopping --------------------------------------------------------------------------

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _shut_down(self, clusters: list[Supervised], grace: float) -> None:
        """q2's own stop first (each worker finishes its task), everything killed after
        `grace` seconds."""
        running = [cluster for cluster in clusters if cluster.running]
        self.stderr.write("supervise: stopping the clusters")
        for cluster in running:
            assert cluster.process is not None
            if not self._exited(cluster):
                cluster.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(self._exited(c) for c in running):
            time.sleep(POLL_SECONDS)
        for cluster in running:
            self._reap(cluster)
