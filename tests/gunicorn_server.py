"""A real gunicorn serving the project, for tests that need separate worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def gunicorn_serving(
    options: list[str], *, env: dict[str, str], probe: Callable[[], None]
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
