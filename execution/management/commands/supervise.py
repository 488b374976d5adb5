"""Run `manage.py qcluster` and start it again whenever it dies; `make run` runs this.

django-q2's sentinel reincarnates a dead worker, pusher or monitor, but nothing restarts the
sentinel itself: once it is killed, the cluster's main process exits and the workers it
leaves behind go on unguarded (no reincarnation, no schedules, so no recovery). This loop
is the supervisor a development machine lacks; in production systemd does the same job
(`Restart=always`, and `KillMode=control-group` for the leftovers).

The cluster runs in a session and process group of its own, so that a dead cluster's
leftovers can be killed as a group before the next one starts, and so that the terminal's
Ctrl-C reaches the supervisor alone, which then stops the cluster in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

PR_SET_PDEATHSIG = 1
# A cluster that ran this long was healthy: the next restart waits the shortest backoff again.
STABLE_SECONDS = 60.0
POLL_SECONDS = 0.1


def _stop_with_the_supervisor() -> None:
    """In the child before exec (Linux): SIGTERM the cluster if the supervisor is killed."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Command(BaseCommand):
    help = "Run a q2 cluster (manage.py qcluster) and restart it whenever it dies."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--backoff",
            type=float,
            default=1.0,
            help="seconds before a restart; doubles while the cluster keeps dying young",
        )
        parser.add_argument("--max-backoff", type=float, default=30.0)
        parser.add_argument(
            "--grace",
            type=float,
            default=10.0,
            help="seconds a stopping cluster gets to finish its tasks before it is killed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backoff, grace = options["backoff"], options["grace"]
        self.stopping = False
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        delay = backoff
        while not self.stopping:
            started = time.monotonic()
            cluster = subprocess.Popen(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
                start_new_session=True,
                preexec_fn=_stop_with_the_supervisor,  # the supervisor runs no threads
            )
            self.stderr.write(f"supervise: started qcluster (pid {cluster.pid})")
            self._wait(cluster)
            if self.stopping:
                self._shut_down(cluster, grace)
                break
            code = self._reap(cluster)
            uptime = time.monotonic() - started
            if uptime >= STABLE_SECONDS:
                delay = backoff
            self.stderr.write(
                f"supervise: qcluster exited ({code}) after {uptime:.1f}s; restarting in {delay:g}s"
            )
            self._sleep(delay)
            delay = min(delay * 2, options["max_backoff"])
        self.stderr.write("supervise: stopped")

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _exited(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the cluster's main process has exited, without reaping it: while it is a
        zombie its pid stays taken, so killing its process group cannot hit anyone else's."""
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _wait(self, process: subprocess.Popen[bytes], *, deadline: float | None = None) -> None:
        """Until the main process exits, or the deadline passes (without one: until the
        supervisor is asked to stop)."""
        while not self._exited(process):
            if self.stopping if deadline is None else time.monotonic() >= deadline:
                return
            time.sleep(POLL_SECONDS)

    def _reap(self, process: subprocess.Popen[bytes]) -> int:
        """Kill what the cluster left in its group (orphaned workers), then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    def _shut_down(self, process: subprocess.Popen[bytes], grace: float) -> None:
        """q2's own stop first (workers finish their task), everything killed after `grace`."""
        self.stderr.write("supervise: stopping qcluster")
        if not self._exited(process):
            process.send_signal(signal.SIGTERM)
            self._wait(process, deadline=time.monotonic() + grace)
        self._reap(process)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
