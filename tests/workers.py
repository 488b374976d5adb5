"""Real `manage.py qcluster` processes against the test database, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# Short limits so that lost leases and lost messages come back within seconds, keeping
# the rule: wasm deadline (TASK_MAX_TIMEOUT_MS) < q2 timeout < q2 retry.
WORKER_ENV = {
    "TASK_MAX_TIMEOUT_MS": "3000",
    "Q_TIMEOUT": "8",
    "Q_RETRY": "9",
    "LEASE_MARGIN_SECONDS": "1",
    "LOG_LEVEL": "WARNING",
}


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Cluster:
    """One qcluster (a sentinel with `workers` worker processes) in its own process group."""

    def __init__(self, workers: int = 1, *, short_limits: bool = True, **env: str) -> None:
        """`short_limits` (for tests) makes lost leases and messages come back in seconds;
        without it the workers run with the production settings."""
        self.workers = workers
        self.env = {
            **os.environ,
            **(WORKER_ENV if short_limits else {}),
            **env,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(settings.DATA_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "Q_WORKERS": str(workers),
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the cluster)
            prefix="qcluster-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Cluster:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole cluster (sentinel and workers) at once: a crashed machine."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    message: str,
    cluster: Cluster | None = None,
    every: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    log = f"\nworker log:\n{cluster.output()}" if cluster else ""
    raise AssertionError(f"timed out after {timeout}s: {message}{log}")
