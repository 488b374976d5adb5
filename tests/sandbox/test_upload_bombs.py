"""Upload bombs: modules built to make compiling take minutes are refused within seconds,
and the process that validated them never compiled them itself."""

from __future__ import annotations

import time

import pytest
import wasmtime

from execution.engine import modules
from execution.engine.validation import (
    WasmCompileTimeout,
    WasmTooManyFunctions,
    function_count,
    validate_wasm,
)

from .conftest import sha256, wasm


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def section(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + leb128(len(payload)) + payload


def empty_functions(count: int) -> bytes:
    """A WASI command (exports `_start` and `memory`) defining `count` empty functions.

    Written as bytes: WAT for a million functions would take longer to assemble than the
    module takes to be refused. wasmtime spends ~0.1 ms compiling each one, so 100,000 of
    them (400 KB) take seconds and a million (4 MB) minutes.
    """
    name = lambda text: leb128(len(text)) + text.encode()  # noqa: E731
    body = b"\x02\x00\x0b"  # size 2: no locals, end
    return (
        b"\0asm\x01\0\0\0"
        + section(1, b"\x01\x60\x00\x00")  # one type: () -> ()
        + section(3, leb128(count) + b"\x00" * count)
        + section(5, b"\x01\x00\x01")  # memory of 1 page
        + section(7, b"\x02" + name("_start") + b"\x00\x00" + name("memory") + b"\x02\x00")
        + section(10, leb128(count) + body * count)
    )


def test_the_function_count_is_read_from_the_header():
    assert function_count(empty_functions(3)) == 3
    assert function_count(empty_functions(1_000_000)) == 1_000_000
    three = bytes(wasmtime.wat2wasm("(module (func) (func) (func))"))
    assert function_count(three) == 3
    assert function_count(wasm("echo")) == 1
    assert function_count(b"\0asm\x01\0\0\0\x03\xff") == 0  # truncated: the compiler decides


def test_a_million_functions_are_refused_at_once():
    bomb = empty_functions(1_000_000)
    before = modules.stats().compiles

    started = time.monotonic()
    with pytest.raises(WasmTooManyFunctions) as refused:
        validate_wasm(bomb)
    seconds = time.monotonic() - started

    # Compiling it would take minutes (100,000 took 15 s here before this check).
    assert seconds < 0.5
    assert (refused.value.code, refused.value.status) == ("wasm_too_many_functions", 400)
    assert refused.value.fields == {"functions": 1_000_000, "limit": 50_000}
    assert modules.stats().compiles == before


def test_a_module_that_compiles_past_the_deadline_is_refused_at_it(settings):
    settings.WASM_COMPILE_TIMEOUT_MS = 1_000
    bomb = empty_functions(45_000)  # under the function limit; ~5 s to compile here

    started = time.monotonic()
    with pytest.raises(WasmCompileTimeout) as refused:
        validate_wasm(bomb)
    seconds = time.monotonic() - started

    assert 1.0 <= seconds < 2.0
    assert (refused.value.code, refused.value.status) == ("wasm_compile_timeout", 400)
    assert refused.value.message == "The binary did not compile within 1000 ms."
    assert refused.value.fields == {"limit_ms": 1_000}
    assert not modules.artifact_path(sha256(bomb)).exists()
    # The next upload is validated as usual.
    assert validate_wasm(wasm("echo")).size == len(wasm("echo"))


def test_a_module_under_both_limits_is_accepted(settings):
    settings.WASM_MAX_FUNCTIONS = 1_000
    data = empty_functions(1_000)

    validated = validate_wasm(data)

    assert modules.artifact_path(validated.sha256).is_file()
