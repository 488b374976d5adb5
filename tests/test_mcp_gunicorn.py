"""`/mcp` served as production serves it: gunicorn with threads (`--worker-class gthread`, as
the README's production command), each request a WSGI call in a thread that runs the MCP SDK
with `async_to_sync`, with real workers on PostgreSQL. The official client runs agents
through one gunicorn process, several sessions at once, each waiting for its results."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from django.conf import settings
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from escrow.services import deposit_create
from marketplace.apikeys import api_key_create
from marketplace.models import Task
from tests.test_mcp import agent_with, structured
from tests.workers import Cluster, database_url

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = 4
RUNS = 5  # per session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "QUEUE_NAME": settings.QUEUE_NAME,
    }
    command = [
        *("gunicorn", "marketplace.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"),
        *("--worker-class", "gthread", "--threads", "8"),
    ]
    web = subprocess.Popen(
        [sys.executable, "-m", *command, "--log-level", "warning"],
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
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


def test_agents_run_through_gunicorns_threads_at_once(gunicorn):
    from tests.factories import UserFactory

    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=50_000_000)
    agent_with(bob, "echo")
    key, raw = api_key_create(user=alice, name="llm", scopes=["tasks:read", "tasks:write"])

    async def session(number: int, outputs: list[Any]) -> None:
        headers = {"Authorization": f"Bearer {raw}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=90)) as http,
            streamable_http_client(gunicorn, http_client=http) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            for run in range(RUNS):
                text = f"session {number}, run {run}"
                arguments = {"slug": "echo", "input": text, "budget": 100_000}
                outputs.append((text, structured(await client.call_tool("run_agent", arguments))))

    async def sessions() -> list[Any]:
        outputs: list[Any] = []
        async with anyio.create_task_group() as group:
            for number in range(SESSIONS):
                group.start_soon(session, number, outputs)
        return outputs

    with Cluster(workers=2):
        outputs = anyio.run(sessions)

    assert len(outputs) == SESSIONS * RUNS
    for text, run in outputs:
        assert (run["status"], run["output"]) == ("succeeded", text), run
    assert Task.objects.filter(api_key=key, status="succeeded").count() == SESSIONS * RUNS
