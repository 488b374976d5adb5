"""Host calls cost fuel: a guest flooding random_get, fd_write, the clock or poll_oneoff
runs out of fuel like a guest spinning in wasm, instead of burning host CPU until its
deadline on almost none."""

from __future__ import annotations

import resource
import time

import pytest
import wasmtime

from execution.engine import host, sandbox

from .conftest import limits, sha256

WASI = "wasi_snapshot_preview1"
RANDOM = f'(import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))'
FD_WRITE = f'(import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'
CLOCK = f'(import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))'
POLL = f'(import "{WASI}" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'
FUEL = 200_000_000


def module(body: str, *imports: str, pages: int = 17) -> bytes:
    text = f'(module {" ".join(imports)} (memory (export "memory") {pages}) {body})'
    return bytes(wasmtime.wat2wasm(text))


def loop(call: str) -> str:
    return f'(func (export "_start") (loop $l (drop {call}) (br $l)))'


def run(data: bytes, *, fuel: int = FUEL, timeout_ms: int = 10_000, stdin: bytes = b""):
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    result = sandbox.run(
        sha256=sha256(data),
        load=lambda: data,
        stdin=stdin,
        argv=["flood"],
        limits=limits(fuel=fuel, timeout_ms=timeout_ms),
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result, cpu, time.monotonic() - started


# 1,024 one-byte iovecs at 0..8 KiB, pointing at byte 65,536.
IOVECS = (
    "(local $i i32) (loop $fill "
    "(i32.store (i32.mul (local.get $i) (i32.const 8)) (i32.const 65536)) "
    "(i32.store (i32.add (i32.mul (local.get $i) (i32.const 8)) (i32.const 4)) (i32.const 1)) "
    "(local.set $i (i32.add (local.get $i) (i32.const 1))) "
    "(br_if $fill (i32.lt_u (local.get $i) (i32.const 1024))))"
)

FLOODS = {
    "random_get of one byte": module(loop("(call $random (i32.const 1024) (i32.const 1))"), RANDOM),
    "random_get of a MiB": module(loop("(call $random (i32.const 0) (i32.const 1048576))"), RANDOM),
    "fd_write of 1,024 iovecs to stderr": module(
        '(func (export "_start") '
        + IOVECS
        + "(loop $l (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1024) "
        "(i32.const 60000))) (br $l)))",
        FD_WRITE,
    ),
    "fd_write of a MB a call to stderr, past its cap": module(
        '(func (export "_start") (i32.store (i32.const 0) (i32.const 65536)) '
        "(i32.store (i32.const 4) (i32.const 1000000)) "
        "(loop $l (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) "
        "(i32.const 60000))) (br $l)))",
        FD_WRITE,
    ),
    "fd_write to a closed descriptor": module(
        loop("(call $fd_write (i32.const 9) (i32.const 0) (i32.const 1) (i32.const 8))"), FD_WRITE
    ),
    "clock_time_get": module(
        loop("(call $clock (i32.const 0) (i64.const 0) (i32.const 8))"), CLOCK
    ),
    "poll_oneoff": module(
        loop("(call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))"), POLL
    ),
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_a_host_call_flood_runs_out_of_fuel_long_before_its_deadline(name):
    result, cpu, seconds = run(FLOODS[name])

    assert result.failure_reason == sandbox.OUT_OF_FUEL, (result.failure_reason, result.detail)
    assert result.fuel_used == FUEL
    # Before host calls were metered, each of these ran the whole 10 s on < 2 M fuel.
    # Now 2e8 fuel buys about as much host CPU as it buys wasm: a fraction of a second.
    assert cpu < 1.0, cpu
    assert seconds < 5.0


def test_random_bytes_cost_fuel_by_the_byte_and_the_call():
    def draw(size: int) -> int:
        data = module(
            f'(func (export "_start") (drop (call $random (i32.const 0) (i32.const {size}))))',
            RANDOM,
        )
        result, _, _ = run(data)
        assert result.failure_reason == ""
        return result.fuel_used

    small, large = draw(16), draw(16 + 65_536)

    assert large - small == 65_536 * host.RANDOM_BYTE_FUEL
    assert small > host.HOST_CALL_FUEL + 16 * host.RANDOM_BYTE_FUEL
    assert small < host.HOST_CALL_FUEL + 16 * host.RANDOM_BYTE_FUEL + 100


def test_a_guest_without_fuel_for_a_call_gets_no_bytes():
    # Enough fuel to enter the call, not enough for the MiB it asks for.
    data = module(
        '(func (export "_start") (drop (call $random (i32.const 0) (i32.const 1048576))) '
        "(unreachable))",
        RANDOM,
    )
    result, _, _ = run(data, fuel=host.HOST_CALL_FUEL + 1_000)

    assert result.failure_reason == sandbox.OUT_OF_FUEL
    assert result.fuel_used == host.HOST_CALL_FUEL + 1_000


def test_metered_runs_replay_to_the_same_output_and_fuel():
    # Ten draws of 32 random bytes, written to stdout.
    data = module(
        '(func (export "_start") (local $i i32) '
        "(loop $l (drop (call $random (i32.add (i32.const 64) (i32.mul (local.get $i) "
        "(i32.const 32))) (i32.const 32))) "
        "(local.set $i (i32.add (local.get $i) (i32.const 1))) "
        "(br_if $l (i32.lt_u (local.get $i) (i32.const 10)))) "
        "(i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 320)) "
        "(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))",
        RANDOM,
        FD_WRITE,
    )
    first, _, _ = run(data)
    second, _, _ = run(data)

    assert first.failure_reason == second.failure_reason == ""
    assert (first.stdout, first.fuel_used) == (second.stdout, second.fuel_used)
    assert len(first.stdout) == 320
    assert first.fuel_used > 11 * host.HOST_CALL_FUEL + 320 * host.RANDOM_BYTE_FUEL
