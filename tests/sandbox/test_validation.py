"""Upload validation: every cause of rejection has its own stable code."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from django.conf import settings

from execution.engine import modules
from execution.engine.errors import EngineError
from execution.engine.validation import (
    WasmCompileFailed,
    WasmForbiddenImport,
    WasmInvalid,
    WasmMemoryTooLarge,
    WasmNoMemory,
    WasmNoStart,
    WasmNotWasm,
    WasmTooLarge,
    validate_wasm,
)

from .conftest import sha256, wasm

SAMPLE_ECHO = Path(settings.BASE_DIR) / "agents" / "dist" / "echo.wasm"


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def test_a_wasi_command_is_accepted_compiled_and_cached_by_a_child_process():
    data = wasm("echo")
    before = modules.stats()

    validated = validate_wasm(data)

    assert (validated.sha256, validated.size) == (sha256(data), len(data))
    assert modules.artifact_path(validated.sha256).is_file()
    # This process never compiled it: the child did, and left its artifact for the runs.
    assert modules.stats().compiles == before.compiles
    compiled = modules.get(validated.sha256, lambda: pytest.fail("compiled twice"))
    assert compiled.sha256 == validated.sha256
    assert modules.stats().disk_hits == before.disk_hits + 1


@pytest.mark.skipif(not SAMPLE_ECHO.exists(), reason="sample agents not built")
def test_the_sample_echo_agent_is_accepted():
    assert validate_wasm(SAMPLE_ECHO.read_bytes()).size == SAMPLE_ECHO.stat().st_size


def test_an_oversized_upload_is_refused_before_anything_else(settings):
    settings.WASM_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
    data = b"\xff" * (16 * 1024 * 1024 + 1)  # not wasm either: size is checked first

    with pytest.raises(WasmTooLarge) as raised:
        validate_wasm(data)

    assert (raised.value.code, raised.value.status) == ("wasm_too_large", 413)
    assert raised.value.fields == {"size": len(data), "limit": 16 * 1024 * 1024}


def test_an_upload_of_exactly_the_limit_is_not_too_large(settings):
    settings.WASM_MAX_UPLOAD_BYTES = len(wasm("echo"))

    assert validate_wasm(wasm("echo")).size == len(wasm("echo"))


REJECTIONS = {
    "garbage bytes": (bytes(range(256)) * 4, WasmNotWasm, "wasm_not_wasm"),
    "empty file": (b"", WasmNotWasm, "wasm_not_wasm"),
    "WAT text": (
        b'(module (memory (export "memory") 1) (func (export "_start")))',
        WasmNotWasm,
        "wasm_not_wasm",
    ),
    "magic then garbage": (
        b"\0asm\x01\0\0\0" + b"\xff" * 64,
        WasmCompileFailed,
        "wasm_compile_failed",
    ),
    "truncated module": (wasm("echo")[:-7], WasmCompileFailed, "wasm_compile_failed"),
    "component": (b"\0asm\x0d\0\x01\0", WasmCompileFailed, "wasm_compile_failed"),
    "host function import": (wasm("host_import"), WasmForbiddenImport, "wasm_forbidden_import"),
    "unknown WASI import": (
        wasm("unknown_wasi_import"),
        WasmForbiddenImport,
        "wasm_forbidden_import",
    ),
    "no _start": (wasm("no_start"), WasmNoStart, "wasm_no_start"),
    "no memory export": (wasm("no_memory"), WasmNoMemory, "wasm_no_memory"),
    "initial memory over the maximum": (
        wasm("initial_memory_over_maximum"),
        WasmMemoryTooLarge,
        "wasm_memory_too_large",
    ),
}


@pytest.mark.parametrize(("data", "error", "code"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_invalid_upload_is_rejected_with_its_own_code(data, error, code):
    with pytest.raises(error) as raised:
        validate_wasm(data)

    assert raised.value.code == code
    assert raised.value.status == 400
    assert isinstance(raised.value, WasmInvalid) and isinstance(raised.value, EngineError)
    assert raised.value.message


def test_rejection_codes_are_distinct():
    codes = [error.code for _, error, _ in REJECTIONS.values()] + [WasmTooLarge.code]

    assert len(set(codes)) == 7


def test_forbidden_imports_are_named():
    with pytest.raises(WasmForbiddenImport) as raised:
        validate_wasm(wasm("host_import"))

    assert raised.value.fields == {"imports": ["env.system"]}
    assert "env.system" in raised.value.message


def test_start_with_a_signature_is_not_a_command():
    data = wat(
        '(module (memory (export "memory") 1)'
        ' (func (export "_start") (param i32) (result i32) (local.get 0)))'
    )

    with pytest.raises(WasmNoStart):
        validate_wasm(data)


def test_memory_exported_under_another_name_does_not_count():
    data = wat('(module (memory (export "heap") 1) (func (export "_start")))')

    with pytest.raises(WasmNoMemory):
        validate_wasm(data)


def test_initial_memory_at_the_task_maximum_less_the_table_slice_is_accepted(settings):
    # 2,000 pages (125 MiB): a 127 MiB limit keeps 2 MiB of it for tables.
    settings.TASK_MAX_MEMORY_MB = 127
    assert validate_wasm(wasm("initial_memory_too_large")).size > 0

    settings.TASK_MAX_MEMORY_MB = 126
    with pytest.raises(WasmMemoryTooLarge):
        validate_wasm(wasm("initial_memory_too_large"))


def test_an_imported_memory_is_forbidden():
    data = wat(
        '(module (import "wasi_snapshot_preview1" "memory" (memory 1))'
        ' (export "memory" (memory 0)) (func (export "_start")))'
    )

    with pytest.raises(WasmForbiddenImport):
        validate_wasm(data)


def test_rejected_modules_leave_no_artifact(wasm_cache_dir):
    for data, error, _ in REJECTIONS.values():
        with pytest.raises(error):
            validate_wasm(data)

    assert not wasm_cache_dir.exists() or not any(wasm_cache_dir.iterdir())
