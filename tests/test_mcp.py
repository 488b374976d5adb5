"""`/mcp` through the official MCP Python SDK's client, over HTTP, against a live server with
real worker processes on PostgreSQL (SPEC §19).

The client is the SDK's own: `streamable_http_client` and `ClientSession` with their
defaults, an `httpx2` client only to add the `Authorization` header. Each test runs its MCP
session in an event loop of its own (`anyio.run`), and reads the database outside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from escrow.models import Account, Escrow
from escrow.services import deposit_create
from marketplace.apikeys import api_key_create
from marketplace.binaries import binary_upload
from marketplace.models import Agent, Task
from marketplace.task_wait import listener_stop
from tests.factories import AgentFactory, UserFactory
from tests.workers import Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"
FUNDS = 50_000_000
TOOLS = {"search_agents", "get_agent", "quote", "run_agent", "get_task", "verify_receipt"}


def mcp_session(url: str, key: str | None, flow: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Run `flow` in an initialized MCP session with the official client."""

    async def main() -> Any:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        timeout = httpx2.Timeout(30, read=120)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await flow(session)

    return anyio.run(main)


def agent_with(owner, slug: str, **fields) -> Agent:
    agent = AgentFactory.create(
        owner=owner, slug=slug, **{"base_fee": 1_000, "fuel_price": 1_000, **fields}
    )
    binary_upload(agent=agent, data=ECHO.read_bytes())
    agent.refresh_from_db()
    return agent


@pytest.fixture(autouse=True)
def _no_listener_left():
    yield
    listener_stop()  # run_agent's wait listens; its connection would keep the database


@pytest.fixture
def people():
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=FUNDS)
    return alice, bob


@pytest.fixture
def mcp_url(live_server) -> str:
    return f"{live_server.url}/mcp"


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


def test_it_lists_the_tools_with_their_input_schemas(people, mcp_url):
    alice, _ = people
    _, key = api_key_create(user=alice, name="llm", scopes=["tasks:read", "tasks:write"])

    async def flow(session: ClientSession) -> Any:
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in mcp_session(mcp_url, key, flow)}
    assert set(tools) == TOOLS
    run = tools["run_agent"].input_schema
    assert run["required"] == ["slug", "input"]
    assert run["properties"]["wait_seconds"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 60,
        "default": 30,
        "description": "How long to wait for the task to be final.",
    }
    assert run["properties"]["budget"]["type"] == "integer"
    assert run["properties"]["version"]["type"] == "integer"
    assert "type" not in run["properties"]["input"]  # any JSON value
    search = tools["search_agents"].input_schema
    assert set(search["properties"]) == {"query", "tags", "min_reputation", "max_base_fee"}
    assert search.get("required", []) == []
    assert tools["get_agent"].input_schema["required"] == ["slug"]
    assert tools["quote"].input_schema["required"] == ["slug", "input"]
    assert tools["get_task"].input_schema["required"] == ["id"]
    assert tools["verify_receipt"].input_schema["required"] == ["task_id"]
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"


def test_an_agent_finds_quotes_runs_and_verifies_an_agent(people, mcp_url):
    alice, bob = people
    echo = agent_with(bob, "echo", description="Says back what it is given.", tags=["text"])
    agent_with(bob, "parrot", base_fee=5_000)
    key, raw = api_key_create(
        user=alice, name="llm", scopes=["tasks:read", "tasks:write"], limits={"per_task": 200_000}
    )

    async def flow(session: ClientSession) -> dict[str, Any]:
        found = structured(await session.call_tool("search_agents", {"query": "says back"}))
        cheap = structured(await session.call_tool("search_agents", {"max_base_fee": 1_000}))
        detail = structured(await session.call_tool("get_agent", {"slug": "echo"}))
        quoted = structured(
            await session.call_tool("quote", {"slug": "echo", "input": "hello, agent"})
        )
        began = time.monotonic()
        ran = await session.call_tool("run_agent", {"slug": "echo", "input": "hello, agent"})
        took = time.monotonic() - began
        run = structured(ran)
        verified = structured(
            await session.call_tool("verify_receipt", {"task_id": run["task_id"]})
        )
        again = structured(await session.call_tool("get_task", {"id": run["task_id"]}))
        return {
            "found": found,
            "cheap": cheap,
            "detail": detail,
            "quoted": quoted,
            "ran": ran,
            "run": run,
            "took": took,
            "verified": verified,
            "again": again,
        }

    with Cluster():
        seen = mcp_session(mcp_url, raw, flow)

    assert [agent["slug"] for agent in seen["found"]["agents"]] == ["echo"]
    assert [agent["slug"] for agent in seen["cheap"]["agents"]] == ["echo"]
    summary = seen["found"]["agents"][0]
    assert summary["base_fee"] == 1_000 and summary["fuel_price"] == 1_000
    assert summary["requesters"] == 0 and 0 <= summary["reputation"] <= 100
    assert summary["contract"]["version"] == 1
    detail = seen["detail"]
    assert detail["contract"]["version"] == 1
    assert detail["recommended"] == echo.recommended_limits()
    assert detail["quote"]["runs"] == 0 and detail["quote"]["estimate"] is None
    assert seen["quoted"]["input_bytes"] == len(b"hello, agent")

    run = seen["run"]
    assert not seen["ran"].is_error
    assert run["status"] == "succeeded" and run["final"] is True, run
    assert run["output"] == "hello, agent"
    assert run["version"] == 1
    task = Task.objects.get(pk=run["task_id"])
    # The default budget: the quote's suggestion (the max cost, with no runs yet), capped
    # by the key's per-task limit.
    assert seen["quoted"]["suggested_budget"] > 200_000
    assert task.budget == 200_000 and task.api_key_id == key.pk
    assert (run["cost"], run["refund"]) == (task.cost, task.refund)
    assert run["cost"] + run["refund"] == task.budget
    assert run["receipt_id"] == task.receipt.pk
    assert json.loads(seen["ran"].content[0].text) == run  # the same result as text

    assert seen["verified"]["valid"] is True
    assert seen["verified"]["receipt"] == task.receipt.as_dict()
    assert seen["again"] == run
    key.refresh_from_db()
    assert key.spent_daily == task.cost  # the refund was given back to the key
    assert Escrow.objects.get(task=task).status == "released"


def test_without_a_key_it_answers_401_with_a_bearer_challenge(people, mcp_url):
    answer = httpx2.post(
        mcp_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"]["code"] == "not_authenticated"
    wrong = httpx2.post(mcp_url, json={}, headers={"Authorization": "Bearer axk_nonsense"})
    assert wrong.status_code == 401
    with pytest.raises(Exception):  # noqa: B017 (the client's own error for a 401)
        mcp_session(mcp_url, None, lambda session: session.list_tools())


def test_a_key_outside_its_allowlist_gets_agent_not_allowed(people, mcp_url):
    alice, bob = people
    agent_with(bob, "echo")
    other = agent_with(bob, "other")
    _, raw = api_key_create(
        user=alice, name="llm", scopes=["tasks:read", "tasks:write"], agents=[other]
    )

    async def flow(session: ClientSession) -> Any:
        return await session.call_tool(
            "run_agent", {"slug": "echo", "input": "hi", "budget": 50_000}
        )

    refused = mcp_session(mcp_url, raw, flow)
    assert refused.is_error
    assert refused.structured_content["error"]["code"] == "agent_not_allowed"
    assert refused.structured_content["error"]["fields"] == {"agents": ["other"]}
    assert refused.content[0].text.startswith("agent_not_allowed: ")
    assert not Task.objects.exists() and not Escrow.objects.exists()
    assert Account.objects.get(user=alice).balance == FUNDS


def test_a_key_without_the_scope_is_refused_as_the_rest_api_refuses_it(people, mcp_url):
    alice, bob = people
    agent_with(bob, "echo")
    _, raw = api_key_create(user=alice, name="reader", scopes=["tasks:read"])

    async def flow(session: ClientSession) -> Any:
        return await session.call_tool("run_agent", {"slug": "echo", "input": "hi"})

    refused = mcp_session(mcp_url, raw, flow)
    assert refused.is_error
    assert refused.structured_content["error"]["code"] == "scope_required"
    assert refused.structured_content["error"]["fields"]["required_scope"] == "tasks:write"
    assert not Task.objects.exists()


def test_bad_arguments_are_a_validation_error_naming_the_argument(people, mcp_url):
    alice, bob = people
    agent_with(bob, "echo")
    _, raw = api_key_create(user=alice, name="llm", scopes=["tasks:write"])

    async def flow(session: ClientSession) -> Any:
        return await session.call_tool(
            "run_agent", {"slug": "echo", "input": "hi", "wait_seconds": 61}
        )

    refused = mcp_session(mcp_url, raw, flow)
    assert refused.is_error
    error = refused.structured_content["error"]
    assert error["code"] == "validation_error"
    assert error["fields"]["path"] == "/wait_seconds"
    assert not Task.objects.exists()


def test_get_and_delete_are_answered_as_a_stateless_server_answers_them(people, mcp_url):
    alice, _ = people
    _, raw = api_key_create(user=alice, name="llm", scopes=["tasks:read"])
    auth = {"Authorization": f"Bearer {raw}", "Accept": "text/event-stream"}
    assert httpx2.get(mcp_url, headers=auth).status_code == 405
    assert httpx2.delete(mcp_url, headers=auth).status_code == 405


def test_a_keys_daily_cap_holds_under_16_concurrent_runs_to_the_microcredit(people, mcp_url):
    alice, bob = people
    agent_with(bob, "echo")
    budget = 100_000
    cap = 5 * budget + budget - 1  # five runs, and one µCR short of a sixth
    key, raw = api_key_create(
        user=alice, name="llm", scopes=["tasks:read", "tasks:write"], limits={"daily": cap}
    )

    async def one(number: int) -> Any:
        async def flow(session: ClientSession) -> Any:
            arguments = {"slug": "echo", "input": f"run {number}", "budget": budget}
            return await session.call_tool("run_agent", {**arguments, "wait_seconds": 0})

        headers = {"Authorization": f"Bearer {raw}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http,
            streamable_http_client(mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await flow(session)

    async def burst() -> list[Any]:
        answers: list[Any] = [None] * 16

        async def run(number: int) -> None:
            answers[number] = await one(number)

        async with anyio.create_task_group() as group:
            for number in range(16):
                group.start_soon(run, number)
        return answers

    # No worker yet: nothing settles (and gives back) during the burst, so what the key has
    # committed is exactly the budgets held.
    answers = anyio.run(burst)
    ran = [structured(answer) for answer in answers if not answer.is_error]
    refused = [structured(answer)["error"] for answer in answers if answer.is_error]
    assert len(ran) == 5 and len(refused) == 11
    assert {error["code"] for error in refused} == {"spend_limit_exceeded"}
    assert {error["fields"]["limit"] for error in refused} == {"daily"}
    assert {error["fields"]["remaining"] for error in refused} == {budget - 1}
    key.refresh_from_db()
    held = sum(Escrow.objects.filter(task__api_key=key).values_list("amount", flat=True))
    assert key.spent_daily == held == 5 * budget <= cap
    assert Task.objects.filter(api_key=key).count() == 5

    with Cluster(workers=2) as cluster:
        wait_for(
            lambda: Task.objects.filter(status="succeeded").count() == 5,
            timeout=60,
            message="the five runs to settle",
            cluster=cluster,
        )
    key.refresh_from_db()
    costs = sum(task.cost or 0 for task in Task.objects.filter(api_key=key))
    assert key.spent_daily == costs < cap  # the refunds were given back to the key
    assert Account.objects.get(user=alice).balance == FUNDS - costs


def test_the_sdks_high_level_client_works_too_in_its_default_mode(people, mcp_url):
    # `Client` first asks `server/discover` at the newest protocol (2026-07-28, one request
    # per exchange, no handshake), which the stateless transport serves as well.
    alice, bob = people
    agent_with(bob, "echo")
    _, raw = api_key_create(user=alice, name="llm", scopes=["tasks:read"])

    async def main() -> Any:
        headers = {"Authorization": f"Bearer {raw}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(mcp_url, http_client=http)) as client,
        ):
            tools = await client.list_tools()
            found = await client.call_tool("search_agents", {})
            return client.session.protocol_version, tools, found

    version, tools, found = anyio.run(main)
    assert version == "2026-07-28"
    assert {tool.name for tool in tools.tools} == TOOLS
    assert [agent["slug"] for agent in structured(found)["agents"]] == ["echo"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(people, mcp_url, settings):
    alice, _ = people
    _, raw = api_key_create(user=alice, name="llm", scopes=["tasks:read"])
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "x" * 2_000})
    answer = httpx2.post(
        mcp_url,
        content=body,
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"


def test_an_input_is_checked_against_the_versions_contract_before_money_moves(people, mcp_url):
    alice, bob = people
    counter = agent_with(bob, "counter")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    binary_upload(agent=counter, data=ECHO.read_bytes(), input_schema=schema, output_schema=schema)
    key, raw = api_key_create(user=alice, name="llm", scopes=["tasks:read", "tasks:write"])

    async def flow(session: ClientSession) -> dict[str, Any]:
        def run(**arguments: Any) -> Any:
            return session.call_tool(
                "run_agent", {"slug": "counter", "budget": 100_000, **arguments}
            )

        return {
            "detail": structured(await session.call_tool("get_agent", {"slug": "counter"})),
            "wrong": await run(input={"n": "three"}),
            "missing": await run(input={}),
            "unknown": await run(input={"n": 3}, version=9),
            "typed": structured(await run(input={"n": 3})),
            "pinned": structured(await run(input="free text", version=1)),
        }

    with Cluster():
        seen = mcp_session(mcp_url, raw, flow)

    assert seen["detail"]["contract"] == {
        "version": 2,
        "input_schema": schema,
        "output_schema": schema,
    }
    for name, path in (("wrong", "/n"), ("missing", "/n")):
        error = seen[name].structured_content["error"]
        assert seen[name].is_error and error["code"] == "invalid_input", error
        assert error["fields"]["path"] == path
    assert seen["unknown"].structured_content["error"]["code"] == "version_not_found"
    typed = seen["typed"]
    assert (typed["status"], typed["version"], typed["output"]) == ("succeeded", 2, {"n": 3})
    pinned = seen["pinned"]
    assert (pinned["status"], pinned["version"], pinned["output"]) == ("succeeded", 1, "free text")
    # The refused inputs held nothing: two tasks, two escrows, the key charged for two.
    tasks = Task.objects.filter(api_key=key)
    assert tasks.count() == 2 and Escrow.objects.count() == 2
    key.refresh_from_db()
    assert key.spent_total == sum(task.cost or 0 for task in tasks)
