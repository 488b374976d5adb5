"""Scheduled jobs run once per tick across hosts (SPEC §17): django-q2's scheduler makes one
task per due schedule however many clusters tick at once, and each job holds an advisory lock
so that a second run of it (a redelivered message, an overlapping tick) skips."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q import scheduler as q2_scheduler
from django_q.models import Schedule

from execution import tasks as scheduled
from marketplace.schedule_lock import once_across_hosts
from marketplace.webhooks import tasks as webhook_tasks
from tests.concurrency import run_threads

postgres = pytest.mark.postgres


def test_every_scheduled_job_takes_the_lock():
    jobs = [
        scheduled.recover,
        scheduled.settle_channels,
        scheduled.recover_funding,
        scheduled.sweep_earnings,
        webhook_tasks.sweep,
    ]
    assert all(hasattr(job, "__wrapped__") for job in jobs)


@pytest.mark.django_db
def test_on_sqlite_one_host_runs_the_job_without_a_lock():
    if connection.vendor != "sqlite":
        pytest.skip("the embedded mode runs on SQLite")
    runs = []

    @once_across_hosts("test job")
    def job() -> dict[str, int]:
        runs.append(1)
        return {"done": 1}

    assert job() == {"done": 1}
    assert job() == {"done": 1}
    assert len(runs) == 2


@postgres
@pytest.mark.django_db(transaction=True)
def test_two_clusters_ticking_at_once_make_one_task_per_due_schedule(monkeypatch):
    due = timezone.now() - timedelta(seconds=5)
    Schedule.objects.all().delete()
    Schedule.objects.create(
        func="math.floor", args="1", name="one tick", schedule_type="I", minutes=1, next_run=due
    )
    sent: list[str] = []
    lock = threading.Lock()

    def slow_enqueue(func, *args, **kwargs):
        # Hold the schedule's row lock a while, so the other cluster really waits on it.
        time.sleep(0.5)
        with lock:
            sent.append(func)
        return uuid.uuid4().hex

    monkeypatch.setattr(q2_scheduler, "async_task", slow_enqueue)
    barrier = threading.Barrier(2)

    def cluster(_: int) -> None:
        barrier.wait()
        q2_scheduler.scheduler(broker=object())  # type: ignore[arg-type]
        connection.close()

    errors = run_threads(2, cluster)

    assert not errors, errors
    assert sent == ["math.floor"]
    assert Schedule.objects.get(name="one tick").next_run > timezone.now()


@postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_already_running_on_another_host_is_skipped_then_runs_again():
    inside, release = threading.Event(), threading.Event()
    runs = []

    @once_across_hosts("test job")
    def job() -> dict[str, int]:
        runs.append(1)
        inside.set()
        release.wait(10)
        return {"done": 1}

    results: list[dict[str, int]] = []

    def first_host() -> None:
        results.append(job())
        connection.close()

    thread = threading.Thread(target=first_host)
    thread.start()
    assert inside.wait(10)
    try:
        assert job() == {"skipped": 1}  # this "host" has its own connection: locked out
    finally:
        release.set()
        thread.join(10)

    assert results == [{"done": 1}]
    assert job() == {"done": 1}  # the lock went with the run
    assert len(runs) == 2


@postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_that_fails_still_releases_the_lock():
    @once_across_hosts("failing job")
    def job() -> dict[str, int]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        job()
    with pytest.raises(RuntimeError):
        job()  # not {"skipped": 1}: the first run's lock was released
