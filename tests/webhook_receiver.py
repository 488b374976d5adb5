"""A real HTTP server on a loopback address, in a thread, that records the webhooks it gets."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the body was read


class Receiver:
    """Answers each POST with the next of `statuses` (then 200), or a redirect to
    `redirect_to`. With `hold`, the first request is not answered until `release()`."""

    def __init__(
        self,
        statuses: tuple[int, ...] = (),
        *,
        host: str = "127.0.0.1",
        redirect_to: str | None = None,
        hold: bool = False,
    ) -> None:
        self.statuses: deque[int] = deque(statuses)
        self.redirect_to = redirect_to
        self.received: list[Received] = []
        self.got_one = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    first = not receiver.received
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.time())
                    )
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                receiver.got_one.set()
                if first:
                    receiver.released.wait(60)
                if receiver.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", receiver.redirect_to)
                else:
                    self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.host = host
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def release(self) -> None:
        self.released.set()

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} webhook(s), got {len(self.received)}")

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
