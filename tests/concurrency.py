"""Running a test's work in real threads, each with a database connection of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connections


def run_threads(count: int, target: Callable[[int], object]) -> list[BaseException]:
    """`target(0)` … `target(count - 1)` in `count` threads that start together; the
    exceptions they raised (the test reports them)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # collected and reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors
