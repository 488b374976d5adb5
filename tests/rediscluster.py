"""A throwaway `redis-server` for tests and benchmarks: a free local port, a temporary
directory, no persistence (a restart loses every queued message, as a crashed Redis without
AOF does). If the binary is missing and we are root on Debian, it is installed with apt-get,
as tests/pgcluster.py does for PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings


def find_server() -> str | None:
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")


def install_server() -> str:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "redis-server was not found. Install the 'redis-server' package, or set "
            "REDIS_SERVER to its path."
        )
    print("Installing redis-server with apt-get…", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(command, check=True, env=env, capture_output=True)
    server = find_server()
    if server is None:
        raise RuntimeError("apt-get installed redis-server but it is not on PATH")
    return server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RedisServer:
    """`start()`, `restart()` (a crash: SIGKILL, then a fresh empty server on the same
    port), `stop()`. `url` is what REDIS_URL should be."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.binary = find_server() or install_server()
        self.host = host
        self.port = free_port(host)
        self.root = Path(tempfile.mkdtemp(prefix="rediscluster-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on {self.host}:{self.port}")

    def queue_length(self, key: str | None = None) -> int:
        """LLEN of a list (django-q2's task-run queue by default), by the plain Redis
        protocol."""
        key = key or f"django_q:{settings.TASK_QUEUE}:q"
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(f"LLEN {key}\r\n".encode())
            reply = sock.recv(64)
        return int(reply[1:].split(b"\r\n", 1)[0])

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
