"""`/mcp` request by request, in process with Django's test client (on either database): the
JSON-RPC a client sends and what the stateless transport answers. The official client's
sessions over HTTP are in tests/test_mcp.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from marketplace.apikeys import api_key_create
from tests.factories import make_agent

HEADERS: dict[str, Any] = {
    "HTTP_ACCEPT": "application/json, text/event-stream",
    "HTTP_MCP_PROTOCOL_VERSION": "2025-11-25",
}


def rpc(client: Client, method: str, params: dict[str, Any] | None = None, **headers: Any):
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    return client.post("/mcp", body, content_type="application/json", **HEADERS, **headers)


def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response = rpc(client, "tools/call", {"name": name, "arguments": arguments})
    assert response.status_code == 200, response.content
    return response.json()["result"]


@pytest.fixture
def keyed(alice, bob):
    make_agent(bob, slug="echo")

    def client_for(*scopes: str) -> Client:
        _, raw = api_key_create(user=alice, name="llm", scopes=list(scopes))
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    return client_for


def test_it_answers_a_list_and_a_call_in_single_requests(keyed):
    client = keyed("tasks:read")
    listed = rpc(client, "tools/list")
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"
    names = [tool["name"] for tool in listed.json()["result"]["tools"]]
    assert names == [
        "search_agents",
        "get_agent",
        "quote",
        "run_agent",
        "get_task",
        "verify_receipt",
    ]
    found = call(client, "search_agents", {"query": "echo"})
    assert found["isError"] is False
    assert [agent["slug"] for agent in found["structuredContent"]["agents"]] == ["echo"]


def test_without_a_key_it_is_401_with_a_bearer_challenge(db):
    response = rpc(Client(), "tools/list")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_account_token_is_not_a_key_here(alice):
    from marketplace.services import user_token

    response = rpc(Client(), "tools/list", HTTP_AUTHORIZATION=f"Token {user_token(user=alice)}")
    assert response.status_code == 401


def test_a_tool_needs_the_scope_its_rest_endpoint_needs(keyed):
    client = keyed("tasks:write")  # can run, but not read tasks
    result = call(client, "get_task", {"id": "00000000-0000-0000-0000-000000000000"})
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["code"] == "scope_required"
    assert result["content"][0]["text"].startswith("scope_required: ")


def test_arguments_are_checked_against_the_listed_schema(keyed):
    client = keyed("tasks:read")
    result = call(client, "search_agents", {"min_reputation": 101})
    assert result["isError"] is True
    error = result["structuredContent"]["error"]
    assert (error["code"], error["fields"]["path"]) == ("validation_error", "/min_reputation")
    extra = call(client, "get_agent", {"slug": "echo", "verbose": True})
    assert extra["structuredContent"]["error"]["code"] == "validation_error"


def test_missing_things_have_the_rest_apis_codes(keyed):
    client = keyed("tasks:read")
    missing = call(client, "get_agent", {"slug": "nobody"})
    assert missing["structuredContent"]["error"]["code"] == "agent_not_found"
    task = call(client, "get_task", {"id": "00000000-0000-0000-0000-000000000000"})
    assert task["structuredContent"]["error"]["code"] == "task_not_found"
    receipt = call(client, "verify_receipt", {"task_id": "not-a-uuid"})
    assert receipt["structuredContent"]["error"]["code"] == "validation_error"


def test_an_unknown_tool_is_a_protocol_error(keyed):
    response = rpc(keyed("tasks:read"), "tools/call", {"name": "withdraw", "arguments": {}})
    assert response.json()["error"]["code"] == -32602


def test_a_run_retried_with_its_idempotency_key_is_the_same_task(keyed, funded_alice):
    from escrow.models import Account, Escrow
    from marketplace.models import Task

    client = keyed("tasks:write")
    run = {"slug": "echo", "input": "hi", "wait_seconds": 0, "idempotency_key": "retry-1"}
    first = call(client, "run_agent", run)["structuredContent"]
    again = call(client, "run_agent", run)["structuredContent"]  # the default budget again
    assert first["status"] == "queued" and again["task_id"] == first["task_id"]
    held = first["budget"]
    assert Task.objects.count() == Escrow.objects.count() == 1
    assert Account.objects.get(user=funded_alice).balance == 10_000_000 - held
    # The same key for another input, version or budget is a conflict, and holds nothing.
    for other in ({"input": "bye"}, {"budget": held + 1}, {"version": 2}, {"slug": "echo"}):
        result = call(client, "run_agent", {**run, **other})
        if other == {"slug": "echo"}:
            assert result["structuredContent"]["task_id"] == first["task_id"]
            continue
        assert result["structuredContent"]["error"]["code"] == "idempotency_conflict", other
    assert Task.objects.count() == 1
    assert Account.objects.get(user=funded_alice).balance == 10_000_000 - held
    # Without a key, a second call is a second run.
    del run["idempotency_key"]
    assert call(client, "run_agent", run)["structuredContent"]["task_id"] != first["task_id"]
