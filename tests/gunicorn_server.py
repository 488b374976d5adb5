"""A real gunicorn serving the project, for tests that need separate worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_env(**extra: str) -> dict[str, str]:
    """The environment of a server process that serves this test's database, its data and
    media directories and its queue."""
    from django.conf import settings

    from tests.workers import database_url

    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "QUEUE_NAME": settings.QUEUE_NAME,
        **extra,
    }


@contextmanager
def gunicorn_serving(
    options: list[str], *, env: dict[str, str], probe: Callable[[], object]
) -> Iterator[subprocess.Popen[str]]:
    """`gunicorn marketplace.wsgi` with `options`, once `probe()` (a connection to where it
    binds) stops raising OSError, within a minute; stopped with SIGTERM, killed if it takes
    more than 30 s to stop. A server that dies while starting fails with its output."""
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "marketplace.wsgi", *options, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert web.poll() is None, web.communicate()[0]
            try:
                probe()
                break
            except OSError:
                time.sleep(0.2)
        yield web
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()
