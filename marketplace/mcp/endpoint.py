"""`/mcp`: Streamable HTTP for MCP clients, served by a Django view.

Production serves Django over WSGI (gunicorn's sync workers) and development over
`runserver`, so MCP can't be a separate ASGI app. The view authenticates like any REST
endpoint (an API key, `Authorization: Bearer`, through the same DRF authentication class:
401 with `WWW-Authenticate: Bearer` without one), reads the body under the same request
size limit, and hands the request to the official SDK's Streamable HTTP transport in
stateless mode with JSON responses: each POST is a complete exchange, one JSON-RPC message
in, one JSON answer out, with no session kept between requests. So any gunicorn worker on
any host can answer any request, and nothing lives longer than its request.

The SDK is asynchronous: the view runs it with `async_to_sync`, which runs an event loop
beside this thread while this thread serves the tools' database work. A session manager
may be run only once, so each request gets its own (creating one costs microseconds).

The SDK's own Host and Origin checks (DNS rebinding) are left off: Django checks the Host
against ALLOWED_HOSTS before any view, and a page of another origin can't send the
`Authorization` header here (no CORS answer allows it), so it can't act with a key.

GET, which opens a server-to-client event stream, gets 405: the MCP transport lets a server
offer none, and on a sync worker an open stream would hold the worker for as long as the
client likes. DELETE is answered by the stateless transport itself (405: no session).
"""

from __future__ import annotations

from typing import Any

import anyio
from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView
from starlette.types import Message

from marketplace.api.auth_keys import ANY_KEY, ApiKeyAuthentication, api_key_of
from marketplace.api.common import current_user
from marketplace.mcp.calls import Caller
from marketplace.mcp.server import CALLER_SCOPE_KEY, SERVER

# A JSON-RPC error without a request id, like the transport's own refusals.
NO_STREAM = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": -32600, "message": "Method Not Allowed: this server offers no SSE stream"},
}


class AnyAccept(BaseContentNegotiation):
    """JSON whatever the client accepts: the transport answers by the MCP rules (an SSE-only
    `Accept` included), and the refusals before it (401) are the JSON envelope."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return None  # the transport reads the body itself

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


@extend_schema(exclude=True)
class McpEndpoint(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes: list[Any] = []
    content_negotiation_class = AnyAccept
    # Any live key comes in; each tool asks for the scope its REST endpoint asks for.
    key_scopes = {"GET": ANY_KEY, "POST": ANY_KEY, "DELETE": ANY_KEY}

    def get(self, request: Request) -> HttpResponse:
        return JsonResponse(NO_STREAM, status=405, headers={"Allow": "POST, DELETE"})

    def post(self, request: Request) -> HttpResponse:
        return exchange(request._request, self.caller(request))

    def delete(self, request: Request) -> HttpResponse:
        return exchange(request._request, self.caller(request))

    def caller(self, request: Request) -> Caller:
        key = api_key_of(request)
        assert key is not None  # the only authentication class is the API key's
        return Caller(user=current_user(request), key=key, request=request)


mcp_endpoint = McpEndpoint.as_view()


def exchange(request: HttpRequest, caller: Caller) -> HttpResponse:
    """One HTTP exchange with the SDK's transport, as a Django response."""
    body = request.body  # bounded by DATA_UPLOAD_MAX_MEMORY_SIZE, like every request
    scope = asgi_scope(request, caller)
    status, headers, content = async_to_sync(_serve)(scope, body)
    response = HttpResponse(content, status=status)
    for name, value in headers:
        if name.lower() != "content-length":
            response[name] = value
    return response


def asgi_scope(request: HttpRequest, caller: Caller) -> dict[str, Any]:
    """The ASGI scope of this WSGI request (headers as WSGI gave them, in latin-1)."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "server": (request.get_host(), int(request.get_port())),
        "client": (request.META.get("REMOTE_ADDR", ""), 0),
        CALLER_SCOPE_KEY: caller,
    }


async def _serve(scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    answered = anyio.Event()
    sent_body = False
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The client stays connected until the answer is complete.
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    manager = StreamableHTTPSessionManager(
        app=SERVER,
        stateless=True,
        json_response=True,
        # Django's bound on request bodies is the one that applies; the SDK's is no lower.
        max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE or len(body) + 1,
    )
    async with manager.run():
        await manager.handle_request(scope, receive, send)
    return status, headers, b"".join(chunks)
