"""`/mcp` served as production serves it: gunicorn with threads (`--worker-class gthread`, as
the README's production command), each request a WSGI call in a thread that runs the MCP SDK
with `async_to_sync`, with real workers on PostgreSQL. The official client runs agents
through one gunicorn process, several sessions at once, each waiting for its results."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from escrow.services import deposit_create
from marketplace.apikeys import api_key_create
from marketplace.models import Task
from tests.gunicorn_server import free_port, gunicorn_serving, served_env
from tests.test_mcp import agent_with, structured
from tests.workers import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = 4
RUNS = 5  # per session


@pytest.fixture
def gunicorn() -> Iterator[str]:
    port = free_port()
    options = ["--bind", f"127.0.0.1:{port}", "--workers", "1"]
    options += ["--worker-class", "gthread", "--threads", "8"]

    def probe() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    with gunicorn_serving(options, env=served_env(), probe=probe):
        yield f"http://127.0.0.1:{port}/mcp"


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
