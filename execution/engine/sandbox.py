"""Run an agent's WASI command on some input, under hard limits, and say how it ended.

The guest gets argv, stdin, stdout and stderr, and nothing else: no environment, no
preopened directories, no sockets, and `poll_oneoff` (sleep) fails at once. Each run has
a fresh Store with its own fuel, memory limit and epoch deadline; output is captured in
memory up to its cap.

Every way a guest can end maps to `failure_reason` ("" on success). Whatever the guest
does, `run` returns a RunResult; an exception means a platform fault (the binary could
not be loaded or compiled, the host ran out of something), never the agent's doing.
wasmtime does not report a refused memory.grow, so `memory_limit` after the start is an
inference from where the guest's memory ended (see `_classify`).

What `fuel_used` means per outcome:
- success, exit_nonzero, output_too_large: exact (the guest stopped in a host call, where
  wasmtime has written its fuel count back);
- out_of_fuel: the whole limit;
- timeout, trap, and memory_limit after a trap: a lower bound, often 0. wasmtime keeps the
  running count in a register and does not write it back when a trap or an epoch interrupt
  unwinds, so only fuel spent before the last host call or function boundary is seen.
  Failed runs are refunded in full, so no charge depends on it.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import wasmtime
from django.conf import settings

from execution.engine import host, modules

OUT_OF_FUEL = "out_of_fuel"
TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
TRAP = "trap"
EXIT_NONZERO = "exit_nonzero"
OUTPUT_TOO_LARGE = "output_too_large"
FAILURE_REASONS = (OUT_OF_FUEL, TIMEOUT, MEMORY_LIMIT, TRAP, EXIT_NONZERO, OUTPUT_TOO_LARGE)

# The memory limit covers tables as well as linear memory. Tables live outside linear
# memory, in the worker's own heap, at 8 bytes an element (a funcref or externref is one
# pointer): a guest growing four tables of 2^20 elements would hold 32 MiB that no memory
# limit saw. So tables get a fixed slice of the limit, a sixteenth of it but at most
# MAX_TABLES x MAX_TABLE_ELEMENTS elements (2 MiB), and linear memory gets the rest:
# tables + linear memory <= memory_limit_mb, whatever the guest grows. 65,536 elements is
# far more than the one function table compilers emit needs.
MAX_TABLES = 4
MAX_TABLE_ELEMENTS = 1 << 16
TABLE_ELEMENT_BYTES = 8
TABLE_SHARE = 16


def table_elements_for(memory_bytes: int) -> int:
    """The most elements any one table may have under a memory limit of `memory_bytes`."""
    share = memory_bytes // TABLE_SHARE
    return min(MAX_TABLE_ELEMENTS, share // (MAX_TABLES * TABLE_ELEMENT_BYTES))


def linear_memory_for(memory_bytes: int) -> int:
    """What is left of a memory limit for linear memory, once tables have their slice."""
    tables = MAX_TABLES * table_elements_for(memory_bytes) * TABLE_ELEMENT_BYTES
    return memory_bytes - tables


@dataclass(frozen=True)
class Limits:
    fuel: int
    memory_bytes: int
    timeout_ms: int
    stdout_bytes: int
    stderr_bytes: int

    @property
    def table_elements(self) -> int:
        return table_elements_for(self.memory_bytes)

    @property
    def linear_memory_bytes(self) -> int:
        return linear_memory_for(self.memory_bytes)

    @classmethod
    def for_task(cls, *, fuel: int, memory_mb: int, timeout_ms: int) -> Limits:
        return cls(
            fuel=fuel,
            memory_bytes=memory_mb * 1024 * 1024,
            timeout_ms=timeout_ms,
            stdout_bytes=settings.SANDBOX_STDOUT_LIMIT,
            stderr_bytes=settings.SANDBOX_STDERR_LIMIT,
        )


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    fuel_used: int
    elapsed_ms: int
    failure_reason: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.failure_reason == ""


def run(
    *,
    sha256: str,
    load: Callable[[], bytes],
    stdin: bytes,
    argv: Sequence[str],
    limits: Limits,
) -> RunResult:
    """Run the binary `sha256` (compiled from `load()` on a cache miss) to completion.

    Raises `modules.ModuleLoadError` if the binary cannot be loaded, compiled or linked.
    """
    compiled = modules.get(sha256, load)
    if compiled.initial_memory_bytes > limits.linear_memory_bytes:
        return RunResult(
            exit_code=None,
            stdout=b"",
            stderr=b"",
            fuel_used=0,
            elapsed_ms=0,
            failure_reason=MEMORY_LIMIT,
            detail=f"the module starts with {_mib(compiled.initial_memory_bytes)} of memory; "
            f"the limit leaves {_mib(limits.linear_memory_bytes)} for it",
        )

    engine = modules.runtime().engine
    store = wasmtime.Store(engine)
    try:
        return _run_in_store(store, compiled, stdin=stdin, argv=argv, limits=limits)
    finally:
        # Release the guest's memory now rather than whenever the Store is collected.
        store.close()


def _run_in_store(
    store: wasmtime.Store,
    compiled: modules.CompiledModule,
    *,
    stdin: bytes,
    argv: Sequence[str],
    limits: Limits,
) -> RunResult:
    store.set_limits(
        memory_size=limits.linear_memory_bytes,
        table_elements=limits.table_elements,
        instances=1,
        tables=MAX_TABLES,
        memories=1,
    )
    store.set_fuel(limits.fuel)
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(argv)
    with _stdin_path(stdin) as path:
        if path is not None:
            wasi.stdin_file = path
        store.set_wasi(wasi)
    stdout = host.CappedBuffer(limits.stdout_bytes, strict=True)
    stderr = host.CappedBuffer(limits.stderr_bytes, strict=False)

    # The deadline counts ticks from now and the current tick is already partly gone:
    # one extra tick keeps the guest from being stopped before its full timeout, and the
    # ticks a late ticker still owes for time gone by are added, or their burst would.
    ticks = math.ceil(limits.timeout_ms / modules.EPOCH_TICK_MS) + 1
    store.set_epoch_deadline(ticks + modules.runtime().ticker.behind())
    memory: wasmtime.Memory | None = None
    exit_code: int | None = None
    ending: BaseException | None = None
    started = time.perf_counter_ns()
    try:
        with host.guest_output(stdout, stderr):
            # Instantiation is inside the limits too: a wasm `start` function runs here.
            instance = compiled.pre.instantiate(store)
            exports = instance.exports(store)
            exported_memory = exports["memory"]
            if isinstance(exported_memory, wasmtime.Memory):
                memory = exported_memory
            start = cast(wasmtime.Func, exports["_start"])  # checked when it was cached
            start(store)
        exit_code = 0
    except wasmtime.ExitTrap as exit_trap:
        exit_code = exit_trap.code
    except (wasmtime.Trap, host.OutputLimitExceeded, host.FuelExhausted) as error:
        ending = error
    except wasmtime.WasmtimeError as error:
        # The guest's doing, though not a trap: an instantiation wasmtime refuses (a table
        # over the limit's table slice) or an exit status WASI does not allow (126 and up).
        ending = error
    elapsed_ms = (time.perf_counter_ns() - started) // 1_000_000

    fuel_used = limits.fuel - store.get_fuel()
    reason, detail = _classify(
        exit_code=exit_code,
        ending=ending,
        stdout=stdout,
        stderr=stderr,
        memory_bytes=memory.data_len(store) if memory is not None else 0,
        limits=limits,
    )
    if reason == OUT_OF_FUEL:
        fuel_used = limits.fuel
    return RunResult(
        exit_code=exit_code,
        stdout=bytes(stdout.data),
        stderr=bytes(stderr.data),
        fuel_used=fuel_used,
        elapsed_ms=elapsed_ms,
        failure_reason=reason,
        detail=detail,
    )


def _classify(
    *,
    exit_code: int | None,
    ending: BaseException | None,
    stdout: host.CappedBuffer,
    stderr: host.CappedBuffer,
    memory_bytes: int,
    limits: Limits,
) -> tuple[str, str]:
    if stdout.overflowed:
        return OUTPUT_TOO_LARGE, f"stdout went over {limits.stdout_bytes} bytes"
    trap_code = ending.trap_code if isinstance(ending, wasmtime.Trap) else None
    if trap_code == wasmtime.TrapCode.OUT_OF_FUEL or isinstance(ending, host.FuelExhausted):
        return OUT_OF_FUEL, f"used all {limits.fuel} fuel"
    if trap_code == wasmtime.TrapCode.INTERRUPT:
        return TIMEOUT, f"still running after {limits.timeout_ms} ms"

    if ending is None and exit_code == 0:
        note = f"stderr cut to {limits.stderr_bytes} bytes" if stderr.overflowed else ""
        return "", note
    if ending is None:
        what, reason = f"exited with code {exit_code}", EXIT_NONZERO
    else:
        what, reason = f"trapped: {_trap_summary(ending)}", TRAP
    if "exceeds table limits" in what:  # wasmtime's wording, at instantiation
        return MEMORY_LIMIT, (
            f"the module declares a table larger than this memory limit allows "
            f"({limits.table_elements} elements a table)"
        )

    # wasmtime reports no refused memory.grow (it just returns -1 to the guest, which then
    # usually aborts). Linear memory never shrinks, so a failed run whose memory ended
    # within an eighth of the limit is taken to have run out of it.
    linear = limits.linear_memory_bytes
    if memory_bytes > linear - max(linear // 8, 64 * 1024):
        near = f"{_mib(memory_bytes)} of memory, near the {_mib(linear)} limit"
        return MEMORY_LIMIT, f"{what} with {near}"
    return reason, what


def _trap_summary(error: BaseException) -> str:
    # wasmtime's message is a backtrace followed by "Caused by:" and the cause.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


@contextmanager
def _stdin_path(data: bytes) -> Iterator[str | None]:
    """A path the WASI stdin can be opened from; gone again once the block exits.

    wasmtime opens the file when it is configured, so the path only has to exist for an
    instant. A memfd keeps the input off the disk and out of any directory.
    """
    if not data:
        yield None  # WASI stdin is empty by default
        return
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("agent-stdin", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="agent-stdin-") as handle:
        handle.write(data)
        handle.flush()
        yield handle.name
