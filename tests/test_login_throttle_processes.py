"""The login limits and the request size limit hold on a real server: gunicorn with two
workers, on the embedded default `make run` sets up (SQLite, the database cache), and a
second `manage.py` process on the same database, as another host would be (SPEC §18, §23)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gunicorn_server import gunicorn_serving
from tests.test_development_env import clean_manage, make_dev_env

pytestmark = pytest.mark.slow

# Another process's attempts, as `manage.py shell` runs them: wrong passwords for alice on the
# admin's login page, then one more there and one on the API's token endpoint.
ELSEWHERE = """
import json
from django.test import Client
from rest_framework.test import APIClient
admin = [
    Client(HTTP_HOST="localhost").post(
        "/admin/login/", {"username": "alice", "password": "guess"}
    ).status_code
    for _ in range(5)
]
token = APIClient(HTTP_HOST="localhost").post(
    "/api/v1/auth/token/", {"username": "alice", "password": "guess"}
).status_code
print(json.dumps({"admin": admin, "token": token}))
"""


WRONG = "guess"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


class Browser:
    """Just enough of a browser for Django's forms: one cookie jar, the CSRF token; and the
    client address the proxy in front of the server says it has."""

    def __init__(self, path: Path, address: str) -> None:
        self.path = path
        self.address = address
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, form: dict[str, str] | None = None):
        connection = UnixHTTPConnection(self.path)
        headers = {"Host": "localhost", "X-Forwarded-For": self.address}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = "&".join(f"{k}={v}" for k, v in form.items())
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, url, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";")[0]
        connection.close()
        return response, text

    def log_in(self, username: str, password: str = WRONG):
        _, page = self.request("GET", "/accounts/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, page[:500]
        form = {"csrfmiddlewaretoken": match.group(1), "username": username, "password": password}
        return self.request("POST", "/accounts/login/", form)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """gunicorn with two workers on a fresh checkout, behind a proxy that names the client in
    X-Forwarded-For: (data dir, its socket, its temp dir)."""
    data_dir = tmp_path_factory.mktemp("checkout")
    make_dev_env(data_dir)
    migrated = clean_manage("migrate", "--noinput", "-v0", data_dir=data_dir)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    spool = tmp_path_factory.mktemp("spool")
    path = data_dir / "web.sock"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(data_dir)}

    def probe() -> None:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(path))

    with gunicorn_serving(
        ["--workers", "2", "--bind", f"unix:{path}"],
        # TMPDIR: where Django spools uploaded files.
        env={**env, "NUM_PROXIES": "1", "TMPDIR": str(spool)},
        probe=probe,
    ):
        yield data_dir, path, spool


def test_logins_count_across_processes(server):
    """alice's username bucket filled by gunicorn's two workers and by another process."""
    data_dir, path, _ = server
    answers = [Browser(path, "203.0.113.1").log_in("alice") for _ in range(5)]
    assert [response.status for response, _ in answers] == [200] * 5
    assert all("Please enter a correct username and password" in text for _, text in answers)

    elsewhere = clean_manage("shell", "-c", ELSEWHERE, data_dir=data_dir)
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    assert json.loads(elsewhere.stdout.strip().splitlines()[-1]) == {
        "admin": [200] * 5,
        "token": 429,
    }

    response, text = Browser(path, "203.0.113.1").log_in("alice")
    assert response.status == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "Too many login attempts from here." in text


def test_one_client_address_is_counted_across_the_workers(server):
    """Ten usernames tried from one client address, whichever worker took each attempt."""
    _, path, _ = server
    statuses = [Browser(path, "203.0.113.2").log_in(f"user{n}")[0].status for n in range(12)]

    assert statuses == [200] * 10 + [429] * 2
    assert Browser(path, "203.0.113.3").log_in("user11")[0].status == 200


def test_an_oversized_body_is_refused_before_the_server_reads_it(server):
    """400 MB announced to the login page, with the CSRF cookie a visit hands out (so that the
    CSRF check would read the body for its token): the answer comes after 64 KiB of it, and
    nothing was spooled to disk."""
    _, path, spool = server
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(
            b"POST /accounts/login/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=BoUnDaRy\r\n"
            b"Content-Length: 400000000\r\nCookie: csrftoken=%s\r\n\r\n"
            b"--BoUnDaRy\r\nContent-Disposition: form-data; name=f; filename=f.bin\r\n\r\n%s"
            % (b"a" * 32, b"\0" * 65536)
        )
        answer = client.recv(65536)

        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert list(spool.iterdir()) == []
