"""Small hand-written agents (WAT) for end-to-end tests of the executor."""

from __future__ import annotations

import wasmtime

FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write" '
    "(func $fd_write (param i32 i32 i32 i32) (result i32)))"
)
PROC_EXIT = '(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))'


def module(body: str, *imports: str) -> bytes:
    return bytes(
        wasmtime.wat2wasm(f'(module {" ".join(imports)} (memory (export "memory") 1) {body})')
    )


def write(text: str) -> str:
    """Instructions that write `text` (ASCII) to stdout."""
    data = "".join(
        f"(i32.store8 (i32.const {64 + i}) (i32.const {ord(c)}))" for i, c in enumerate(text)
    )
    return (
        f"{data}(i32.store (i32.const 0) (i32.const 64))"
        f"(i32.store (i32.const 4) (i32.const {len(text)}))"
        "(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"
    )


def busy(iterations: int, then: str = "done\n") -> bytes:
    """Burns about 8 fuel per iteration, then writes `then`."""
    return module(
        '(func (export "_start") (local $i i32)'
        f"(local.set $i (i32.const {iterations}))"
        "(loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1)))"
        "(br_if $l (i32.ne (local.get $i) (i32.const 0))))"
        f"{write(then)})",
        FD_WRITE,
    )


SPIN = module('(func (export "_start") (loop $l (br $l)))')
TRAP = module('(func (export "_start") unreachable)')
EXIT_3 = module(
    f'(func (export "_start") {write("bad input")} (call $proc_exit (i32.const 3)))',
    FD_WRITE,
    PROC_EXIT,
)
MEMORY_BOMB = module(
    '(func (export "_start") '
    "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable)"
)
FLOOD = module(
    '(func (export "_start") '
    "(i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 60000))"
    "(loop $l (br_if $l (i32.eqz "
    "(call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
    "(call $proc_exit (i32.const 1)))",
    FD_WRITE,
    PROC_EXIT,
)
NOT_JSON = module(f'(func (export "_start") {write("this is not json")})', FD_WRITE)
