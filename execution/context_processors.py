"""What every page may show: for operators, whether the workers are alive."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from execution.heartbeat import WorkerStatus, worker_status


def worker_health(request: HttpRequest) -> dict[str, Callable[[], WorkerStatus]]:
    """`worker_status` for staff only, as a callable: the template calls it (one query) only
    when it renders the banner, so htmx fragments and everyone else's pages cost nothing."""
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return {}
    return {"worker_status": worker_status}
