"""Waiting requests (`Prefer: wait`) under the server setup the README names for production:
gunicorn with threaded workers. While requests wait in a process, its other threads answer
everybody else at once; beyond TASK_WAITERS_PER_PROCESS, a waiting request is answered 202
at once, the preference not applied. No worker runs here: every task stays queued, so each
wait lasts its whole N seconds."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from escrow.services import deposit_create
from marketplace.models import Task
from tests.factories import make_agent
from tests.gunicorn_server import free_port, gunicorn_serving, served_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 4
WAITERS = 2  # TASK_WAITERS_PER_PROCESS: two threads wait, two stay for everybody else
WAIT = 4


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    base = f"127.0.0.1:{port}"
    options = ["--workers", "1", "--bind", base, "--worker-class", "gthread"]
    options += ["--threads", str(THREADS)]
    env = served_env(TASK_WAITERS_PER_PROCESS=str(WAITERS))
    with gunicorn_serving(options, env=env, probe=lambda: call(base, "", "GET", "/healthz")):
        yield base


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
