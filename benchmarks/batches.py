"""Tasks submitted per second through `POST /api/v1/tasks/batch/` (SPEC §20): batches of 100
echo tasks POSTed by a few client threads to gunicorn (one sync worker per core, DEBUG off),
from the first request to the last answer. No worker runs them: the figure is submission
alone. Imported by `e2e.py` after Django is set up; its own requester, so that its queued
tasks never count against the end-to-end run's limits."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from rest_framework.authtoken.models import Token

from benchmarks.common import BUDGET, INPUT, RUN_ID, production_env
from benchmarks.web import Gunicorn
from escrow.services import deposit_create
from marketplace.models import Agent
from marketplace.services import user_create


@dataclass
class Batches:
    tasks: int
    size: int
    clients: int
    wall: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.tasks / self.wall


def batch_submission(agent: Agent, batches: int = 40, size: int = 100, clients: int = 4) -> Batches:
    requester = user_create(username=f"bench-batches-{RUN_ID}")
    deposit_create(user_id=requester.pk, amount=(batches + 2) * size * BUDGET)
    token = Token.objects.get_or_create(user=requester)[0].key
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    body = json.dumps(
        {"tasks": [{"agent": agent.slug, "input": INPUT, "budget": BUDGET}] * size}
    ).encode()
    latencies: list[float] = []
    errors: list[str] = []
    with Gunicorn(os.cpu_count() or 1, production_env()) as web:

        def post() -> None:
            began = time.perf_counter()
            status, answer = web.request("POST", "/api/v1/tasks/batch/", body, headers)
            if status != 201:
                errors.append(f"batch answered {status}: {answer[:300]!r}")
                return
            latencies.append(time.perf_counter() - began)

        for _ in range(2):  # warm-up: each worker's imports and caches
            post()
        latencies.clear()
        shares = [batches // clients + (i < batches % clients) for i in range(clients)]

        def client(count: int) -> None:
            for _ in range(count):
                post()

        threads = [threading.Thread(target=client, args=(share,)) for share in shares]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - began
        if errors:
            raise RuntimeError(f"{errors[0]}\nweb log:\n{web.output()}")
    return Batches(tasks=batches * size, size=size, clients=clients, wall=wall, latencies=latencies)
