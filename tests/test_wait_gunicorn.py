"""Waiting requests (`Prefer: wait`) under the server setup the README names for production:
gunicorn with threaded workers. While requests wait in a process, its other threads answer
everybody else at once; beyond TASK_WAITERS_PER_PROCESS, a waiting request is answered 202
at once, the preference not applied. No worker runs here: every task stays queued, so each
wait lasts its whole N seconds."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from escrow.services import deposit_create
from marketplace.models import Task
from tests.factories import make_agent
from tests.test_mcp_gunicorn import free_port
from tests.workers import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
THREADS = 4
WAITERS = 2  # TASK_WAITERS_PER_PROCESS: two threads wait, two stay for everybody else
WAIT = 4


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "QUEUE_NAME": settings.QUEUE_NAME,
        "TASK_WAITERS_PER_PROCESS": str(WAITERS),
    }
    command = ["gunicorn", "marketplace.wsgi", "--workers", "1", "--bind", f"127.0.0.1:{port}"]
    command += ["--worker-class", "gthread", "--threads", str(THREADS)]
    web = subprocess.Popen(
        [sys.executable, "-m", *command, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert web.poll() is None, web.communicate()[0]
            try:
                call(base, "", "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


def call(base: str, token: str, method: str, path: str, **headers: str) -> tuple[int, Any, float]:
    body = None
    if method == "POST":
        body = json.dumps({"agent": "echo", "input": "hi", "budget": 100_000})
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Token {token}"
    connection = http.client.HTTPConnection(base, timeout=30)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers, time.monotonic() - started
    finally:
        connection.close()


def test_waiting_requests_leave_the_other_threads_to_everybody_else(server, alice, bob):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    make_agent(bob, slug="echo")
    token = Token.objects.create(user=alice).key

    with ThreadPoolExecutor(max_workers=WAITERS) as pool:
        waiting = [
            pool.submit(call, server, token, "POST", "/api/v1/tasks/", Prefer=f"wait={WAIT}")
            for _ in range(WAITERS)
        ]
        time.sleep(1.0)  # both are waiting now
        assert not any(future.done() for future in waiting)

        # The process's other threads answer at once meanwhile.
        status, _, seconds = call(server, token, "GET", "/api/v1/tasks/")
        assert (status, seconds < 1.0) == (200, True), seconds
        # One more waiting request is one too many: answered at once, not applied.
        status, headers, seconds = call(
            server, token, "POST", "/api/v1/tasks/", Prefer=f"wait={WAIT}"
        )
        assert (status, headers.get("Preference-Applied"), seconds < 1.5) == (202, None, True)

        answers = [future.result() for future in waiting]

    for status, headers, seconds in answers:
        assert (status, headers["Preference-Applied"]) == (202, f"wait={WAIT}")
        assert WAIT <= seconds < WAIT + 2
    assert Task.objects.filter(status="queued").count() == WAITERS + 1
