"""Request bodies over the limit are refused (413) before they are read or written to disk,
uploads included, logged in or not (SPEC §23). Django's own limit counts only what it keeps
in memory: a multipart body of any size used to be read whole, its files spooled to disk,
before the CSRF check or the view could refuse it."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.test.client import BOUNDARY, MULTIPART_CONTENT, FakePayload, encode_multipart
from rest_framework.test import APIClient

from marketplace.models import AgentBinary
from tests.factories import UserFactory, make_agent

pytestmark = pytest.mark.django_db

LIMIT = 100_000  # DATA_UPLOAD_MAX_MEMORY_SIZE in these tests
WASM_LIMIT = 50_000  # WASM_MAX_UPLOAD_BYTES: the upload bound is this plus 64 KiB
BIG = 1_000_000  # a file well over both, as the 400 MB one was
WRITTEN: list[int] = []  # bytes every upload handler was given to write to disk


class CountingUploadHandler(TemporaryFileUploadHandler):
    """Django's handler that spools an uploaded file to FILE_UPLOAD_TEMP_DIR, counting."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        WRITTEN.append(len(raw_data))
        return super().receive_data_chunk(raw_data, start)


class CountingInput(FakePayload):
    """The request's socket, as the WSGI server hands it over: counts what is read."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = super().readline(size)
        self.bytes_read += len(data)
        return data


@pytest.fixture
def spool(settings, tmp_path: Path) -> Path:
    """Every uploaded file goes to a directory of the test's own, through the counting
    handler, and small bodies stay in memory as usual."""
    WRITTEN.clear()
    spool = tmp_path / "uploads"
    spool.mkdir()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    settings.WASM_MAX_UPLOAD_BYTES = WASM_LIMIT
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1_000
    settings.FILE_UPLOAD_HANDLERS = ["tests.test_request_limits.CountingUploadHandler"]
    return spool


def post_raw(client: Any, path: str, body: bytes, content_type: str, stream: Any) -> Any:
    """POST `body`, read by the app from `stream`."""
    return client.generic("POST", path, body, content_type, **{"wsgi.input": stream})


def post_multipart(client: Any, path: str, fields: dict[str, Any]) -> tuple[Any, CountingInput]:
    body = encode_multipart(BOUNDARY, fields)
    stream = CountingInput(body)
    return post_raw(client, path, body, MULTIPART_CONTENT, stream), stream


def big_file(size: int = BIG) -> SimpleUploadedFile:
    return SimpleUploadedFile("agent.wasm", b"\0asm\x01\0\0\0" + b"\0" * (size - 8))


def test_an_oversized_post_to_the_login_page_is_refused_unread(spool):
    """The report's attack: a multipart POST to the login page, with the CSRF cookie a visit
    hands out but no token, so that the CSRF check reads the body to look for one."""
    anonymous = Client(enforce_csrf_checks=True)
    anonymous.cookies["csrftoken"] = "a" * 32

    response, stream = post_multipart(
        anonymous, "/accounts/login/", {"username": "alice", "password": "x", "f": big_file()}
    )

    assert response.status_code == 413
    assert "That request is too large" in response.text
    assert "100,000 bytes" in response.text
    assert stream.bytes_read == 0
    assert sum(WRITTEN) == 0
    assert list(spool.iterdir()) == []


def test_an_oversized_upload_page_post_is_refused_unread(spool, bob):
    make_agent(bob, slug="fresh", with_binary=False)
    as_bob = Client()
    as_bob.force_login(bob)

    response, stream = post_multipart(as_bob, "/agents/fresh/binaries/new/", {"wasm": big_file()})

    assert response.status_code == 413
    assert stream.bytes_read == 0
    assert sum(WRITTEN) == 0
    assert list(spool.iterdir()) == []
    assert not AgentBinary.objects.exists()


def test_the_upload_page_has_the_binary_limit_as_its_own_bound(spool, bob):
    """Over the general limit but within the binary limit plus the multipart allowance: the
    page gets it and says what is wrong with the file."""
    make_agent(bob, slug="fresh", with_binary=False)
    as_bob = Client()
    as_bob.force_login(bob)

    response, stream = post_multipart(
        as_bob, "/agents/fresh/binaries/new/", {"wasm": big_file(LIMIT + 10_000)}
    )

    assert response.status_code == 200
    assert "the limit is 50,000" in response.text
    assert stream.bytes_read > LIMIT
    big, _ = post_multipart(
        as_bob, "/agents/fresh/binaries/new/", {"wasm": big_file(WASM_LIMIT + 70_000)}
    )
    assert big.status_code == 413


def test_an_oversized_api_upload_is_refused_unread_with_the_envelope(spool, bob):
    make_agent(bob, slug="fresh", with_binary=False)
    api = APIClient()
    api.force_authenticate(bob)

    response, stream = post_multipart(api, "/api/v1/agents/fresh/binaries/", {"wasm": big_file()})

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert error["fields"] == {"size": int(response.request["CONTENT_LENGTH"]), "limit": 115_536}
    assert stream.bytes_read == 0
    assert sum(WRITTEN) == 0


def test_an_oversized_json_body_is_refused_unread_logged_in_or_not(spool, alice):
    body = b'{"input": "' + b"a" * LIMIT + b'"}'
    as_alice = APIClient()
    as_alice.force_authenticate(alice)
    for client in (APIClient(), as_alice):
        stream = CountingInput(body)
        response = post_raw(client, "/api/v1/tasks/", body, "application/json", stream)

        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert stream.bytes_read == 0


def test_a_body_within_the_limit_is_read_as_before(spool):
    UserFactory.create(username="dora", password="a long enough passphrase")
    client = Client()

    response, stream = post_multipart(
        client, "/accounts/login/", {"username": "dora", "password": "a long enough passphrase"}
    )

    assert response.status_code == 302
    assert stream.bytes_read > 0


# --- a body with no declared length ---------------------------------------------------------


def run_middleware(request: Any, read: Any) -> Any:
    """The middleware in front of a handler that reads the body with `read`, and whose errors
    become responses as Django's own stack turns them."""
    from marketplace.request_limits import RequestSizeLimitMiddleware

    def view(request: Any) -> HttpResponse:
        return HttpResponse(f"read {len(read(request))}")

    handler: Any = convert_exception_to_response(view)
    return RequestSizeLimitMiddleware(handler)(request)


def undeclared(path: str, body: bytes) -> tuple[Any, BytesIO]:
    """A request whose server hands the app a body without a Content-Length (chunked), as a
    server that passes such a body through would."""
    request = RequestFactory().generic("POST", path, b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    source = BytesIO(body)
    request._stream = source
    return request, source


def test_a_body_without_a_length_is_cut_at_the_limit(spool):
    request, source = undeclared("/api/v1/tasks/", b"x" * BIG)

    response = run_middleware(request, lambda request: request.body)

    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "request_too_large"
    assert source.tell() <= LIMIT + 1


def test_a_body_without_a_length_within_the_limit_is_read_whole(spool):
    request, _ = undeclared("/api/v1/tasks/", b"x" * 1_000)

    response = run_middleware(request, lambda request: request.read())

    assert response.status_code == 200
    assert response.content == b"read 1000"
