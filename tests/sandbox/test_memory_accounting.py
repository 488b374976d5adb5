"""The memory limit covers tables and linear memory together: whatever a guest grows, the
two add up to no more than the task's memory_limit_mb."""

from __future__ import annotations

import struct

import pytest
import wasmtime

from execution.engine import sandbox

from .conftest import MiB, limits, resource_use, sha256

FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write" '
    "(func $fd_write (param i32 i32 i32 i32) (result i32)))"
)


def grow_table(index: int) -> str:
    """Grow table `index` by 1,024 elements while it can, then one by one."""
    grow = f"(table.grow $t{index} (ref.func $f) (i32.const {{step}}))"
    return "".join(
        f"(block $done{index}_{step} (loop $more{index}_{step} "
        f"(br_if $done{index}_{step} (i32.eq {grow.format(step=step)} (i32.const -1))) "
        f"(br $more{index}_{step})))"
        for step in (1024, 1)
    )


# Grows its four tables and its memory as far as they go, touches every byte of memory,
# and prints the four table sizes and the memory's pages as five little-endian u32s.
GREEDY = bytes(
    wasmtime.wat2wasm(
        f"(module {FD_WRITE} "
        '(memory (export "memory") 1) '
        + " ".join(f"(table $t{i} 1 funcref)" for i in range(4))
        + " (func $f) (elem declare func $f) "
        '(func (export "_start") '
        + "".join(grow_table(i) for i in range(4))
        + "(block $full (loop $grow "
        "(br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $grow))) "
        "(memory.fill (i32.const 0) (i32.const 1) "
        "(i32.mul (memory.size) (i32.const 65536))) "
        + "".join(f"(i32.store (i32.const {4 * i}) (table.size $t{i}))" for i in range(4))
        + "(i32.store (i32.const 16) (memory.size)) "
        "(i32.store (i32.const 32) (i32.const 0)) (i32.store (i32.const 36) (i32.const 20)) "
        "(drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))"
    )
)


def run_greedy(memory_mb: int) -> sandbox.RunResult:
    return sandbox.run(
        sha256=sha256(GREEDY),
        load=lambda: GREEDY,
        stdin=b"",
        argv=["greedy"],
        limits=limits(memory_mb=memory_mb, fuel=10**10, timeout_ms=10_000),
    )


@pytest.mark.parametrize("memory_mb", [1, 8, 64, 512])
def test_tables_and_memory_together_stay_within_the_limit(memory_mb):
    result = run_greedy(memory_mb)

    assert result.failure_reason == "", result.detail
    *tables, pages = struct.unpack("<5I", result.stdout)
    table_bytes = sum(tables) * sandbox.TABLE_ELEMENT_BYTES
    assert table_bytes + pages * 65_536 <= memory_mb * MiB
    # Each table got its whole slice, and memory the rest, to the page.
    limit = limits(memory_mb=memory_mb)
    assert tables == [limit.table_elements] * 4
    assert pages == limit.linear_memory_bytes // 65_536


def test_tables_take_a_small_slice_of_the_limit():
    assert limits(memory_mb=64).table_elements == 65_536  # 2 MiB of tables, 62 MiB of memory
    assert limits(memory_mb=64).linear_memory_bytes == 62 * MiB
    assert limits(memory_mb=1).table_elements == 2_048  # a sixteenth of 1 MiB
    assert limits(memory_mb=1).linear_memory_bytes == 1 * MiB - 64 * 1024


def test_a_greedy_guest_holds_no_more_memory_than_its_limit():
    # Before tables were counted, 8 MiB tasks could hold 32 MiB of tables on top.
    with resource_use() as use:
        result = run_greedy(8)

    assert result.failure_reason == ""
    assert use.rss_growth < 8 * MiB + 4 * MiB


def test_a_table_declared_larger_than_the_limit_allows_is_a_memory_limit():
    data = bytes(
        wasmtime.wat2wasm(
            '(module (memory (export "memory") 1) (table 100000 funcref) (func (export "_start")))'
        )
    )

    result = sandbox.run(
        sha256=sha256(data), load=lambda: data, stdin=b"", argv=["t"], limits=limits(memory_mb=64)
    )

    assert result.failure_reason == sandbox.MEMORY_LIMIT
    assert result.detail == (
        "the module declares a table larger than this memory limit allows (65536 elements a table)"
    )


def test_a_module_whose_memory_fits_only_without_the_table_slice_is_refused():
    # 64 MiB of initial memory, under a 64 MiB limit that keeps 2 MiB for tables.
    data = bytes(
        wasmtime.wat2wasm('(module (memory (export "memory") 1024) (func (export "_start")))')
    )

    result = sandbox.run(
        sha256=sha256(data), load=lambda: data, stdin=b"", argv=["m"], limits=limits(memory_mb=64)
    )

    assert result.failure_reason == sandbox.MEMORY_LIMIT
    assert (
        result.detail == "the module starts with 64 MiB of memory; the limit leaves 62 MiB for it"
    )
