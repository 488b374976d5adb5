"""Checks an uploaded binary is a WASI command this platform can run, before it is stored.

Each cause has its own error code, so an owner is told exactly what to fix. A module that
passes is already compiled, and is put in the module cache so its first run does not pay
for compiling it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import wasmtime
from django.conf import settings

from execution.engine import host, modules, sandbox
from execution.engine.errors import EngineError


class WasmInvalid(EngineError):
    code = "wasm_invalid"
    default_message = "The binary is not a WASI command this platform can run."


class WasmTooLarge(WasmInvalid):
    code = "wasm_too_large"
    status = 413
    default_message = "The binary is larger than the upload limit."


class WasmNotWasm(WasmInvalid):
    code = "wasm_not_wasm"
    default_message = "The file is not a WebAssembly binary."


class WasmCompileFailed(WasmInvalid):
    code = "wasm_compile_failed"
    default_message = "The WebAssembly binary does not compile."


class WasmNoStart(WasmInvalid):
    code = "wasm_no_start"
    default_message = "The module does not export a `_start` function taking and returning nothing."


class WasmNoMemory(WasmInvalid):
    code = "wasm_no_memory"
    default_message = "The module does not export its linear memory as `memory`."


class WasmForbiddenImport(WasmInvalid):
    code = "wasm_forbidden_import"
    default_message = "The module imports something other than WASI preview 1 functions."


class WasmMemoryTooLarge(WasmInvalid):
    code = "wasm_memory_too_large"
    default_message = "The module's initial memory is larger than any task may use."


@dataclass(frozen=True)
class ValidatedWasm:
    sha256: str
    size: int
    module: wasmtime.Module


def validate_wasm(data: bytes) -> ValidatedWasm:
    """Validate and compile an upload. Raises a `WasmInvalid` subclass naming the cause."""
    limit = settings.WASM_MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise WasmTooLarge(
            f"The binary is {len(data)} bytes; the limit is {limit}.",
            fields={"size": len(data), "limit": limit},
        )
    if not data.startswith(modules.WASM_MAGIC):
        raise WasmNotWasm()

    try:
        module = modules.compile_wasm(data)
    except wasmtime.WasmtimeError as error:
        raise WasmCompileFailed(
            f"The WebAssembly binary does not compile: {_summary(error)}"
        ) from error

    forbidden = [
        f"{item.module}.{item.name}"
        for item in module.imports
        if item.module != host.WASI_MODULE or not isinstance(item.type, wasmtime.FuncType)
    ]
    if forbidden:
        raise WasmForbiddenImport(
            f"Only functions from {host.WASI_MODULE} may be imported; "
            f"found {', '.join(forbidden)}.",
            fields={"imports": forbidden},
        )
    try:
        modules.runtime().linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as error:
        # A WASI name that does not exist, or one imported with the wrong signature.
        raise WasmForbiddenImport(
            f"An import does not match WASI preview 1: {_summary(error)}"
        ) from error

    exports = {export.name: export.type for export in module.exports}
    start = exports.get("_start")
    if not (isinstance(start, wasmtime.FuncType) and not start.params and not start.results):
        raise WasmNoStart()
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise WasmNoMemory()
    initial = memory.limits.min * memory.page_size
    maximum = sandbox.linear_memory_for(settings.TASK_MAX_MEMORY_MB * 1024 * 1024)
    if initial > maximum:
        raise WasmMemoryTooLarge(
            f"The module starts with {initial} bytes of memory; tasks may use at most {maximum}.",
            fields={"initial_memory": initial, "limit": maximum},
        )

    sha256 = hashlib.sha256(data).hexdigest()
    modules.add(sha256, module)
    return ValidatedWasm(sha256=sha256, size=len(data), module=module)


def _summary(error: Exception) -> str:
    # wasmtime's messages are "what failed", a "Caused by:" line, then the cause.
    lines = [line.strip() for line in str(error).splitlines()]
    return ": ".join(line for line in lines if line and line != "Caused by:")[:300]
