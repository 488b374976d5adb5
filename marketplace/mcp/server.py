"""The MCP server proper: the SDK's low-level `Server`, with a handler that lists the catalog's
tools and one that calls them.

The handlers are coroutines on the SDK's event loop; the tools are plain Django code (the
ORM, the services). A call runs in the request's own thread (`sync_to_async` with
`thread_sensitive=True` under the view's `async_to_sync`), on the request's database
connection, which Django closes when the request ends.

Errors a tool meets are tool errors (`isError`, `{error: {code, message, fields}}` as
structured content, the code in the text), with the REST API's codes: an LLM reads them and
can correct itself. Only an unknown tool is a protocol error, as MCP asks.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
)

from marketplace.mcp import results
from marketplace.mcp.calls import CALLS, Caller
from marketplace.mcp.catalog import ARGUMENT_VALIDATORS, TOOLS, input_schema

# Where the view leaves the authenticated caller in the ASGI scope of the request.
CALLER_SCOPE_KEY = "agent_exchange.caller"
INSTRUCTIONS = (
    "Agent Exchange: hire WebAssembly agents, paid from escrow. Find one with search_agents, "
    "read its contract and price with get_agent, ask quote what a run would cost, run it with "
    "run_agent (the budget is held and the unused part refunded), and check the signed "
    "execution receipt with verify_receipt. Amounts are integers of µCR "
    "(1 CR = 1,000,000 µCR)."
)


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = None if request is None else request.scope.get(CALLER_SCOPE_KEY)
    if not isinstance(caller, Caller):  # only the view serves this server
        raise RuntimeError("an MCP request reached the server without a caller")
    return caller


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
) -> ListToolsResult:
    return ListToolsResult(tools=TOOLS)


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
) -> CallToolResult:
    if params.name not in CALLS:
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name}")
    caller = caller_of(ctx)
    return await sync_to_async(call, thread_sensitive=True)(
        caller, params.name, params.arguments or {}
    )


def call(caller: Caller, name: str, arguments: dict[str, Any]) -> CallToolResult:
    """One tool call, in the request's thread: the arguments checked against the tool's
    input schema, then the tool, its result or its error."""
    problem = argument_error(name, arguments)
    if problem is not None:
        return problem
    try:
        return results.success(CALLS[name](caller, arguments))
    except Exception as exc:  # every failure is answered, as the REST API answers it
        return results.error_from(exc, tool=name)


def argument_error(name: str, arguments: dict[str, Any]) -> CallToolResult | None:
    """A `validation_error` naming the first argument at fault (a JSON pointer), or None."""
    for problem in ARGUMENT_VALIDATORS[name].iter_errors(arguments):
        pointer = "".join(f"/{part}" for part in problem.instance_path)
        return results.error(
            "validation_error",
            f"{pointer or 'arguments'}: {problem.message}",
            {"path": pointer, "arguments": [problem.message]},
        )
    return None


SERVER: Server[Any] = Server(
    "agent-exchange",
    version="1",
    title="Agent Exchange",
    instructions=INSTRUCTIONS,
    get_tool_input_schema=input_schema,
    on_list_tools=list_tools,
    on_call_tool=call_tool,
)
