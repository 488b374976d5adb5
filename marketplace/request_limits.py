"""Request bodies are bounded before anything reads them (SPEC §23).

Django bounds what it keeps in memory (`DATA_UPLOAD_MAX_MEMORY_SIZE`), not what it reads: a
multipart body of any size is read and its files spooled to disk before a view, or the CSRF
check, can refuse it. This middleware comes first and answers 413 to a body declared larger
than the bound without reading a byte of it, logged in or not. A body that declares no length
(chunked) gets a stream that refuses to give more than the bound. Django's WSGI handler reads
nothing of such a body today; the cap holds whatever server is in front.

The bound is `DATA_UPLOAD_MAX_MEMORY_SIZE`, except on the two agent binary uploads, where it is
`WASM_MAX_UPLOAD_BYTES` plus room for the multipart framing. API paths (and `/mcp`) are answered
with the error envelope (`request_too_large`), pages with a short HTML page.
"""

from __future__ import annotations

from collections.abc import Callable
from io import IOBase
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve

from marketplace.exceptions import RequestTooLarge, envelope

# The binary uploads, by URL name: the API's and the page's.
UPLOADS = frozenset({"api:agent-binaries", "agent-binary-new"})
# Multipart framing around an upload: boundaries, part headers, the CSRF token field. The
# upload parser (marketplace/api/parsers.py) allows the same.
MULTIPART_ALLOWANCE = 64 * 1024


def body_limit(request: HttpRequest) -> int | None:
    """The most bytes this request's body may have (None: unbounded)."""
    limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None or request.method != "POST":
        return limit
    try:
        name = resolve(request.path_info).view_name
    except Resolver404:
        return limit
    if name in UPLOADS:
        # Never below the general bound: a binary limit smaller than that is the upload's
        # own check to refuse, with its own error (`wasm_too_large`).
        return max(limit, settings.WASM_MAX_UPLOAD_BYTES + MULTIPART_ALLOWANCE)
    return limit


def declared_length(request: HttpRequest) -> int | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


class CappedStream(IOBase):
    """A request body stream that raises `RequestDataTooBig` rather than give more than
    `limit` bytes, and remembers that it did (a stream like Django's own LimitedStream)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.remaining = limit
        self.exceeded = False

    def _take(self, data: bytes) -> bytes:
        self.remaining -= len(data)
        if self.remaining < 0:
            self.exceeded = True
            raise RequestDataTooBig("The request body is over the limit.")
        return data

    def _size(self, size: int | None) -> int:
        # Ask for one byte past the limit at most: enough to know it was passed.
        allowed = self.remaining + 1
        return allowed if size is None or size < 0 else min(size, allowed)

    def read(self, size: int | None = -1, /) -> bytes:
        return self._take(self.stream.read(self._size(size)))

    def readline(self, size: int | None = -1, /) -> bytes:  # type: ignore[override]
        return self._take(self.stream.readline(self._size(size)))


def too_large(request: HttpRequest, limit: int, length: int | None) -> HttpResponse:
    if request.path_info.startswith(("/api/", "/mcp")):
        fields = {"limit": limit} if length is None else {"size": length, "limit": limit}
        message = f"The request body is too large: at most {limit} bytes are accepted here."
        return JsonResponse(envelope(RequestTooLarge.code, message, fields), status=413)
    body = render_to_string("413.html", {"limit": limit})
    return HttpResponse(body, status=413)


class RequestSizeLimitMiddleware:
    """First in MIDDLEWARE: nothing before it reads the body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        limit = body_limit(request)
        if limit is None:
            return self.get_response(request)
        length = declared_length(request)
        if length is not None:
            if length > limit:
                return too_large(request, limit, length)
            # Django's own stream stops at the declared length.
            return self.get_response(request)
        stream = CappedStream(request._stream, limit)
        request._stream = stream  # type: ignore[assignment]
        response = self.get_response(request)
        # Whatever the code that read past the cap made of the error (Django answers 400),
        # the answer is 413.
        return too_large(request, limit, None) if stream.exceeded else response
