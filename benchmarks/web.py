"""End to end as in production: gunicorn serving the API, `qcluster` with as many workers as
the machine has cores, both with DEBUG off, on this run's PostgreSQL. Tasks go in through
`POST /api/v1/tasks/` from a few client threads; the figure is tasks settled per second from
the first request to the last task final. Imported by `e2e.py` after Django is set up."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from benchmarks.common import BASE_DIR, BUDGET, INPUT, production_env
from marketplace.models import Agent, Task
from tests.workers import Cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gunicorn:
    """`gunicorn marketplace.wsgi` with sync workers, in its own process group."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.workers, self.env, self.port = workers, env, free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix="gunicorn-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "marketplace.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
            ],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/healthz")
                return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.output()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@dataclass
class EndToEnd:
    tasks: int
    clients: int
    web_workers: int
    q_workers: int
    wall: float  # first request sent → last task final
    submit_wall: float  # first request sent → last answer
    submit: list[float]  # each request's latency
    failed: int

    @property
    def rate(self) -> float:
        return self.tasks / self.wall


def end_to_end(requester: User, agent: Agent, tasks: int, clients: int = 4) -> EndToEnd:
    cores = os.cpu_count() or 1
    env = production_env()
    token = Token.objects.get_or_create(user=requester)[0].key
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    body = json.dumps({"agent": agent.slug, "input": INPUT, "budget": BUDGET}).encode()

    with Gunicorn(cores, env) as web, Cluster(cores, short_limits=False, **env) as cluster:

        def post() -> Any:
            status, answer = web.request("POST", "/api/v1/tasks/", body, headers)
            if status != 201:
                raise RuntimeError(f"submission answered {status}: {answer[:300]!r}")
            return json.loads(answer)["id"]

        def run(count: int, ids: list[Any], latencies: list[float]) -> None:
            for _ in range(count):
                began = time.perf_counter()
                ids.append(post())
                latencies.append(time.perf_counter() - began)

        warm: list[Any] = []
        run(2 * cores, warm, [])
        wait_final(warm, cluster)
        ids: list[Any] = []
        latencies: list[float] = []
        errors: list[BaseException] = []
        shares = [tasks // clients + (i < tasks % clients) for i in range(clients)]

        def client(count: int) -> None:
            try:
                run(count, ids, latencies)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(share,)) for share in shares]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted = time.monotonic()
        if errors:
            raise RuntimeError(f"{errors[0]}\nweb log:\n{web.output()}")
        ended = wait_final(ids, cluster)
    failed = Task.objects.filter(pk__in=ids).exclude(status=Task.Status.SUCCEEDED).count()
    return EndToEnd(
        tasks=tasks,
        clients=clients,
        web_workers=cores,
        q_workers=cores,
        wall=ended - began,
        submit_wall=submitted - began,
        submit=latencies,
        failed=failed,
    )


def wait_final(ids: Sequence[Any], cluster: Cluster, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES).count() == len(ids):
            return time.monotonic()
        if cluster.process is not None and cluster.process.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"the workers did not finish {len(ids)} tasks in time:\n{cluster.output()}")
