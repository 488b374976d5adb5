"""The hostile corpus: every way a guest can misbehave ends with the right reason, inside
its limit plus a small margin, and the process can still run the next guest."""

from __future__ import annotations

import json
import os
import select
import signal

import pytest

from execution.engine import host, modules, sandbox

from .conftest import MiB, resource_use, rss_bytes, run_corpus, sha256, wasm

# How far past a deadline a run may end: one 10 ms epoch tick, a wake-up, and CI noise.
DEADLINE_MARGIN_MS = 150


@pytest.fixture(autouse=True)
def sandbox_survives():
    """After each hostile run, an ordinary run in the same process still works."""
    yield
    result = run_corpus("echo", stdin=b"still alive")
    assert (result.failure_reason, result.stdout) == ("", b"still alive")


def test_echo_copies_stdin_to_stdout_and_reports_exact_fuel():
    first = run_corpus("echo", stdin=b"hello, agent")
    second = run_corpus("echo", stdin=b"hello, agent")

    assert first.failure_reason == ""
    assert first.exit_code == 0
    assert first.stdout == b"hello, agent"
    assert first.stderr == b""
    # One fd_write of one 12-byte iovec, plus under a thousand wasm instructions.
    host_fuel = host.HOST_CALL_FUEL + host.IOVEC_FUEL + 12 * host.WRITE_BYTE_FUEL
    assert host_fuel < first.fuel_used < host_fuel + 1_000
    assert first.fuel_used == second.fuel_used  # deterministic, so receipts can be replayed


def test_empty_stdin_reads_as_end_of_file():
    result = run_corpus("echo")

    assert (result.failure_reason, result.exit_code, result.stdout) == ("", 0, b"")


def test_stdout_exactly_at_the_cap_is_accepted():
    result = run_corpus("echo", stdin=b"x" * 100, stdout_bytes=100)

    assert result.failure_reason == ""
    assert result.stdout == b"x" * 100


def test_stdout_one_byte_over_the_cap_is_output_too_large():
    result = run_corpus("echo", stdin=b"x" * 101, stdout_bytes=100)

    assert result.failure_reason == sandbox.OUTPUT_TOO_LARGE
    assert result.stdout == b"x" * 100


def test_infinite_loop_runs_out_of_fuel():
    result = run_corpus("infinite_loop", fuel=200_000_000, timeout_ms=10_000)

    assert result.failure_reason == sandbox.OUT_OF_FUEL
    assert result.exit_code is None
    assert result.fuel_used == 200_000_000
    # ~1e9 fuel/s here: 2e8 fuel is a fraction of a second, far from the 10 s deadline.
    assert result.elapsed_ms < 2_000


def test_infinite_loop_times_out_at_the_wall_clock_deadline():
    result = run_corpus("infinite_loop", fuel=10**13, timeout_ms=300)

    assert result.failure_reason == sandbox.TIMEOUT
    assert result.exit_code is None
    assert 300 <= result.elapsed_ms <= 300 + DEADLINE_MARGIN_MS


def test_a_late_epoch_ticker_does_not_stop_a_guest_before_its_timeout():
    # On a busy machine the ticker thread runs late, then makes the ticks it owes in a
    # burst: counted from the run's start, they would end it that much early.
    modules.runtime()  # started, with its ticker
    ticker = modules.runtime().ticker
    ticker._ticks_made -= 10  # as if it had been starved for 100 ms
    result = run_corpus("infinite_loop", fuel=10**13, timeout_ms=300)

    assert result.failure_reason == sandbox.TIMEOUT
    assert 300 <= result.elapsed_ms <= 300 + DEADLINE_MARGIN_MS


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_deadline_still_fires_in_a_worker_forked_after_the_engine_started():
    # django-q2 forks its workers from a parent that may already have used wasm.
    assert run_corpus("trivial").failure_reason == ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            result = run_corpus("infinite_loop", fuel=10**13, timeout_ms=300)
            os.write(write_end, json.dumps([result.failure_reason, result.elapsed_ms]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 10)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child's run never timed out: epochs stopped after fork")
        reason, elapsed_ms = json.loads(os.read(read_end, 1024))
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)

    assert reason == sandbox.TIMEOUT
    assert 300 <= elapsed_ms <= 300 + DEADLINE_MARGIN_MS


def test_memory_bomb_hits_the_memory_limit():
    with resource_use() as use:
        result = run_corpus("memory_bomb", memory_mb=32, timeout_ms=5_000)

    assert result.failure_reason == sandbox.MEMORY_LIMIT
    assert "unreachable" in result.detail
    assert result.elapsed_ms < 1_000
    # The bomb touches every page it gets; it gets no more than its 32 MiB.
    assert use.rss_growth < 32 * MiB + 16 * MiB


def test_initial_memory_above_the_task_limit_is_refused_before_running():
    result = run_corpus("initial_memory_too_large", memory_mb=64)

    assert result.failure_reason == sandbox.MEMORY_LIMIT
    assert (result.exit_code, result.fuel_used, result.elapsed_ms) == (None, 0, 0)
    assert "125 MiB" in result.detail


def test_initial_memory_within_a_larger_task_limit_runs():
    result = run_corpus("initial_memory_too_large", memory_mb=128)

    assert result.failure_reason == ""


def test_stdout_flood_stops_at_the_cap_without_touching_disk():
    with resource_use() as use:
        result = run_corpus("stdout_flood", timeout_ms=5_000)

    assert result.failure_reason == sandbox.OUTPUT_TOO_LARGE
    assert result.stdout == b"A" * MiB
    # The guest ignores the failed write; it is stopped at once, not at its deadline.
    assert result.elapsed_ms < 500
    assert use.rss_growth < 32 * MiB
    assert use.disk_growth < 64 * MiB


def test_stderr_flood_is_truncated_and_stays_bounded_in_memory_and_off_disk():
    with resource_use() as use:
        result = run_corpus("stderr_flood", timeout_ms=10_000)

    # 512 MiB were written; 64 KiB are kept and the guest carries on to a clean exit.
    assert result.failure_reason == ""
    assert result.stdout == b"done\n"
    assert result.stderr == b"E" * 64 * 1024
    assert "stderr cut" in result.detail
    assert use.rss_growth < 64 * MiB
    assert use.disk_growth < 128 * MiB


def test_trap_is_reported_as_a_trap():
    result = run_corpus("trap")

    assert result.failure_reason == sandbox.TRAP
    assert result.exit_code is None
    assert "unreachable" in result.detail


def test_stack_overflow_is_a_trap():
    result = run_corpus("stack_overflow")

    assert result.failure_reason == sandbox.TRAP
    assert "call stack exhausted" in result.detail
    assert result.elapsed_ms < 1_000


def test_division_by_zero_is_a_trap():
    result = run_corpus("divide_by_zero")

    assert result.failure_reason == sandbox.TRAP
    assert "integer divide by zero" in result.detail


def test_nonzero_exit_keeps_the_message_on_stderr():
    result = run_corpus("exit_nonzero")

    assert result.failure_reason == sandbox.EXIT_NONZERO
    assert result.exit_code == 3
    assert result.stderr == b"bad input: expected JSON\n"
    assert result.fuel_used > 0


def test_guest_cannot_open_files():
    # The module would print /etc/passwd and exit 0 if any directory were preopened.
    result = run_corpus("open_file")

    assert result.failure_reason == sandbox.EXIT_NONZERO
    assert result.exit_code == host.WASI_EBADF
    assert result.stdout == b""


def test_guest_sees_no_environment(monkeypatch):
    monkeypatch.setenv("AGENT_EXCHANGE_SECRET", "hunter2")

    result = run_corpus("read_env")

    assert result.failure_reason == ""
    assert result.stdout == b"no environment\n"


def test_sleep_fails_at_once_instead_of_blocking_past_the_deadline():
    # Under stock WASI this module sleeps 5 s inside a host call no deadline can reach.
    result = run_corpus("sleep", timeout_ms=1_000)

    assert result.failure_reason == sandbox.EXIT_NONZERO
    assert result.exit_code == host.WASI_ENOTSUP
    assert result.elapsed_ms < 100


@pytest.mark.parametrize("name", ["host_import", "unknown_wasi_import"])
def test_module_importing_beyond_wasi_never_runs(name):
    data = wasm(name)

    with pytest.raises(modules.ModuleLoadError, match="does not link"):
        sandbox.run(
            sha256=sha256(data),
            load=lambda: data,
            stdin=b"",
            argv=[name],
            limits=sandbox.Limits.for_task(fuel=10**6, memory_mb=16, timeout_ms=1_000),
        )


def test_bytes_that_do_not_match_the_pinned_hash_are_refused():
    with pytest.raises(modules.ModuleLoadError, match="do not hash"):
        sandbox.run(
            sha256=sha256(wasm("echo")),
            load=lambda: wasm("trap"),
            stdin=b"",
            argv=["echo"],
            limits=sandbox.Limits.for_task(fuel=10**6, memory_mb=16, timeout_ms=1_000),
        )


def test_many_hostile_runs_in_a_row_do_not_leak_memory():
    for name in ("trap", "memory_bomb", "stdout_flood"):
        run_corpus(name, memory_mb=16)
    before = rss_bytes()

    for _ in range(20):
        for name in ("trap", "memory_bomb", "stdout_flood", "divide_by_zero"):
            run_corpus(name, memory_mb=16)

    # Each bomb takes 16 MiB and each flood 1 MiB: keeping any of it would show.
    assert rss_bytes() - before < 16 * MiB


def test_output_pointers_outside_guest_memory_are_refused():
    result = run_corpus("bad_pointers")

    assert result.failure_reason == sandbox.EXIT_NONZERO
    assert result.exit_code == 7  # every attempt got EFAULT
    assert result.stdout == b""
