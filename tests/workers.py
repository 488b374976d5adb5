"""Real `manage.py qcluster` processes against the test database, for end-to-end tests."""

from __future__ import annotations

import contextlib
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
    """One host's worker plane: a `qcluster` for task runs (with `workers` worker processes)
    and one for the service queue (webhooks, dispute replays, withdrawals, schedules), as
    `manage.py supervise` runs them, both in one process group of their own."""

    def __init__(self, workers: int = 1, *, short_limits: bool = True, **env: str) -> None:
        """`short_limits` (for tests) makes lost leases and messages come back in seconds;
        without it the workers run with the production settings."""
        self.workers = workers
        self.env = {
            **os.environ,
            **(WORKER_ENV if short_limits else {}),
            "Q_SERVICE_WORKERS": "1",
            **env,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(settings.DATA_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "QUEUE_NAME": settings.QUEUE_NAME,
            "Q_WORKERS": str(workers),
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the cluster)
            prefix="qcluster-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "qcluster"]

    def start(self) -> Cluster:
        # The task cluster leads a new process group, and the service cluster joins it.
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env={**self.env, "Q_CLUSTER_NAME": settings.TASK_QUEUE},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        self.service = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env={**self.env, "Q_CLUSTER_NAME": settings.SERVICE_QUEUE},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=self.process.pid,
        )
        return self

    def _signal_group(self, signum: int) -> bool:
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def _wait_all(self, timeout: float) -> None:
        for process in (self.process, self.service):
            if process is not None:
                process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL both clusters (sentinels and workers) at once: a crashed machine."""
        if self._signal_group(signal.SIGKILL):
            self._wait_all(timeout=10)
        self.process = self.service = None

    def stop(self) -> None:
        if self._signal_group(signal.SIGTERM):
            try:
                self._wait_all(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = self.service = None

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
    cluster: Cluster | Supervisor | None = None,
    every: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    log = f"\nworker log:\n{cluster.output()}" if cluster else ""
    raise AssertionError(f"timed out after {timeout}s: {message}{log}")


# --- process trees (Linux /proc) -----------------------------------------------------------


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [child for child in pids if parent_of(child) == pid and alive(child)]


def only_child(pid: int) -> int:
    found = children(pid)
    assert len(found) == 1, f"{pid} has children {found}"
    return found[0]


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def environment_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


class Supervisor:
    """`manage.py supervise` (what `make run` and the systemd unit run) against the test
    database, with its two clusters: `clusters()` maps each queue to its qcluster's main pid,
    `leaves(queue)` lists that cluster's workers, pusher and monitor."""

    def __init__(self, *, workers: int = 1, short_limits: bool = True, **env: str) -> None:
        self.env = {
            **os.environ,
            **(WORKER_ENV if short_limits else {}),
            "WORKER_HEARTBEAT_SECONDS": "1",
            **env,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(settings.DATA_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "QUEUE_NAME": settings.QUEUE_NAME,
            "Q_WORKERS": str(workers),
            "Q_SERVICE_WORKERS": "1",
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as it does)
            prefix="supervise-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> Supervisor:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "supervise", *args],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def clusters(self) -> dict[str, int]:
        assert self.process is not None
        found = {}
        for main in children(self.process.pid):
            queue = environment_of(main).get("Q_CLUSTER_NAME")
            if queue:
                found[queue] = main
        return found

    def sentinel(self, queue: str) -> int | None:
        main = self.clusters().get(queue)
        found = children(main) if main else []
        return found[0] if len(found) == 1 else None

    def leaves(self, queue: str) -> list[int]:
        sentinel = self.sentinel(queue)
        return children(sentinel) if sentinel else []

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def terminate(self, timeout: float) -> float:
        """SIGTERM the supervisor alone (systemd's `KillMode=mixed`); seconds it took to go."""
        assert self.process is not None
        clock = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - clock

    def kill_everything(self) -> None:
        if self.process is None:
            return
        # Frozen first, so that it starts no cluster while its tree is listed and killed.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGSTOP)
        tree = [self.process.pid, *descendants(self.process.pid)]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill_everything()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
