"""Checks an uploaded binary is a WASI command this platform can run, before it is stored.

Each cause has its own error code, so an owner is told exactly what to fix. Compiling is
the expensive part, and an upload can be built to make it take minutes (wasmtime spends
~0.1 ms on even an empty function, and a module may declare a million of them): so a
module defining more than `WASM_MAX_FUNCTIONS` functions is refused from its header alone,
and the rest is compiled in a forked child process that is killed at
`WASM_COMPILE_TIMEOUT_MS`, under an address-space limit. The web process never compiles
an upload itself. A module that passes is already compiled: the child writes the
serialized artifact into the module cache (MAC'd like any other artifact this code
compiled), so its first run does not pay for compiling it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import signal
import time
import warnings
from collections.abc import Callable
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


class WasmTooManyFunctions(WasmInvalid):
    code = "wasm_too_many_functions"
    default_message = "The module defines more functions than the platform compiles."


class WasmCompileTimeout(WasmInvalid):
    code = "wasm_compile_timeout"
    default_message = "The binary takes too long to compile."


# Room the compiling child may take on top of the address space it was forked with.
COMPILE_ADDRESS_SPACE = 2 << 30
_FUNCTION_SECTION = 3


@dataclass(frozen=True)
class ValidatedWasm:
    sha256: str
    size: int


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
    functions, most = function_count(data), settings.WASM_MAX_FUNCTIONS
    if functions > most:
        raise WasmTooManyFunctions(
            f"The module defines {functions} functions; the limit is {most}.",
            fields={"functions": functions, "limit": most},
        )

    timeout_ms = settings.WASM_COMPILE_TIMEOUT_MS
    answer = _in_child(lambda: _compile_and_check(data), timeout_s=timeout_ms / 1000)
    if answer is None:
        raise WasmCompileTimeout(
            f"The binary did not compile within {timeout_ms} ms.", fields={"limit_ms": timeout_ms}
        )
    if "error" in answer:
        error = _ERRORS.get(answer["error"], WasmCompileFailed)
        raise error(answer["message"], fields=answer["fields"])
    return ValidatedWasm(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _compile_and_check(data: bytes) -> None:
    """Compile, check and cache `data`; runs in the child. Raises a `WasmInvalid`."""
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

    modules.add(hashlib.sha256(data).hexdigest(), module)


_ERRORS: dict[str, type[WasmInvalid]] = {
    error.code: error
    for error in (
        WasmCompileFailed,
        WasmNoStart,
        WasmNoMemory,
        WasmForbiddenImport,
        WasmMemoryTooLarge,
    )
}


def function_count(data: bytes) -> int:
    """How many functions a module defines, from its function section's header (0 when the
    sections do not parse: the compiler then refuses the module with its own words)."""
    offset = 8  # magic and version
    try:
        while offset < len(data):
            section = data[offset]
            size, offset = _leb128(data, offset + 1)
            if section == _FUNCTION_SECTION:
                return _leb128(data, offset)[0]
            offset += size
    except IndexError:
        return 0
    return 0


def _leb128(data: bytes, offset: int) -> tuple[int, int]:
    """An unsigned LEB128 number at `offset`, and the offset after it."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80 or shift > 35:
            return value, offset


def _in_child(work: Callable[[], None], *, timeout_s: float) -> dict | None:
    """Run `work` in a forked child; None when it is not done within `timeout_s`.

    The answer is {} on success, or the `WasmInvalid` it raised as {error, message,
    fields}. A child that dies without answering (the address-space limit, a crash in the
    compiler) is reported as a compile failure.
    """
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        # Safe here: the child only compiles with an engine of its own (the module cache
        # drops the parent's at fork) and leaves through os._exit, touching nothing shared.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage cannot follow it
        os.close(reader)
        answer: dict = {}
        try:
            _limit_address_space()
            work()
        except WasmInvalid as error:
            answer = {"error": error.code, "message": error.message, "fields": error.fields}
        except BaseException as error:
            message = f"The WebAssembly binary does not compile: {type(error).__name__}"
            answer = {"error": WasmCompileFailed.code, "message": message, "fields": {}}
        try:
            with open(writer, "wb") as out:
                out.write(json.dumps(answer).encode())
        finally:
            os._exit(0)

    os.close(writer)
    try:
        raw = _read_all(reader, time.monotonic() + timeout_s)
    finally:
        os.close(reader)
    if raw is None:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if raw is None:
        return None
    if not raw:
        message = "The WebAssembly binary could not be compiled within the platform's limits."
        return {"error": WasmCompileFailed.code, "message": message, "fields": {}}
    return json.loads(raw)


def _read_all(fd: int, deadline: float) -> bytes | None:
    chunks = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(chunks)
        chunks += chunk


def _limit_address_space() -> None:  # pragma: no cover - runs in the child
    # On top of what the child was forked with, which it shares with its parent.
    try:
        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return  # not Linux: the deadline alone bounds the child
    limit = current + COMPILE_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _summary(error: Exception) -> str:
    # wasmtime's messages are "what failed", a "Caused by:" line, then the cause.
    lines = [line.strip() for line in str(error).splitlines()]
    return ": ".join(line for line in lines if line and line != "Caused by:")[:300]
