"""Runs are reproducible, so receipts can be replayed: no real clock, no real randomness."""

from __future__ import annotations

import hashlib
import struct

import wasmtime

from execution.engine import host, sandbox

# Reads the clock (8 bytes) and 32 random bytes, twice each, and prints all 80 bytes.
PEEK = bytes(
    wasmtime.wat2wasm(
        """
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 100)))
    (drop (call $random (i32.const 108) (i32.const 32)))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 140)))
    (drop (call $random (i32.const 148) (i32.const 32)))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 80))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
    )
)
LIMITS = sandbox.Limits(
    fuel=10**7, memory_bytes=1 << 20, timeout_ms=1_000, stdout_bytes=1 << 10, stderr_bytes=1 << 10
)


def run() -> bytes:
    sha = hashlib.sha256(PEEK).hexdigest()
    result = sandbox.run(sha256=sha, load=lambda: PEEK, stdin=b"", argv=["peek"], limits=LIMITS)
    assert result.ok, result.detail
    return result.stdout


def test_the_clock_stands_still_and_random_bytes_repeat_from_run_to_run():
    first, second = run(), run()
    assert first == second
    clock_a, random_a = first[:8], first[8:40]
    clock_b, random_b = first[40:48], first[48:80]
    assert struct.unpack("<Q", clock_a)[0] == struct.unpack("<Q", clock_b)[0] == host.FIXED_TIME_NS
    # Within a run the stream moves on; across runs it starts over.
    assert random_a != random_b
    assert random_a == hashlib.shake_256(host.RANDOM_SEED + (0).to_bytes(8, "little")).digest(32)
