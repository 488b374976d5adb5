"""The host side of the guest's WASI calls, where it differs from wasmtime's own.

`fd_write` goes into capped in-memory buffers (and stops a guest flooding stdout at once),
the clock stands still and `random_get` is a seeded stream (so a run replays exactly), and
`poll_oneoff` is refused (a sleep in a host call would escape the epoch deadline).
`define` puts them in a linker over wasmtime's WASI; the buffers of the run in progress are
set per thread with `guest_output`.

Each of these calls costs the guest fuel for the work it makes the host do (see
`HOST_CALL_FUEL`): wasmtime meters only wasm instructions, so without it a guest looping
on `random_get` would burn platform CPU until its deadline on almost no fuel.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import wasmtime

WASI_MODULE = "wasi_snapshot_preview1"

# WASI preview1 errno values (not the host's errno numbers).
WASI_EBADF = 8
WASI_EFAULT = 21
WASI_EINVAL = 28
WASI_ENOTSUP = 58
_MAX_IOVS = 1024
_MAX_WRITE = 1 << 30

# --- Fuel for host work -----------------------------------------------------------------
# Wasm burns about 1e9 fuel a second here, so fuel is roughly CPU nanoseconds; a host call
# is charged what it costs in the same unit (measured: ~30 us of CPU to enter Python through
# wasmtime-py and come back, ~1 us per iovec an fd_write unpacks, ~4 ns per byte of
# SHAKE-256, ~1 ns per byte copied). The charge depends only on the call's arguments, so a
# run still replays to the same fuel.
HOST_CALL_FUEL = 40_000
IOVEC_FUEL = 1_000
WRITE_BYTE_FUEL = 1
RANDOM_BYTE_FUEL = 8


class FuelExhausted(Exception):
    """Raised from a host call the guest has not got the fuel left to pay for."""


def _charge(caller: wasmtime.Caller, fuel: int) -> None:
    # wasmtime-py's Caller has no fuel methods, but it carries the store context that
    # Store's own get_fuel and set_fuel work on; inside a host call that count is exact.
    store = cast(wasmtime.Store, caller)
    left = wasmtime.Store.get_fuel(store)
    if left < fuel:
        wasmtime.Store.set_fuel(store, 0)
        raise FuelExhausted
    wasmtime.Store.set_fuel(store, left - fuel)


# --- Guest output ----------------------------------------------------------------------


class OutputLimitExceeded(Exception):
    """Raised from fd_write to stop a guest at once when its stdout goes over the cap."""


@dataclass
class CappedBuffer:
    """A bounded in-memory sink for one guest stream.

    `strict` streams (stdout) stop the guest when it writes past the cap; others (stderr)
    keep the first `limit` bytes and let the guest believe the rest was written.
    """

    limit: int
    strict: bool
    data: bytearray = field(default_factory=bytearray)
    attempted: int = 0

    @property
    def overflowed(self) -> bool:
        return self.attempted > self.limit

    @property
    def room(self) -> int:
        return max(0, self.limit - len(self.data))


_guest_output = threading.local()


@contextmanager
def guest_output(stdout: CappedBuffer, stderr: CappedBuffer) -> Iterator[None]:
    """Route this thread's guest fd_write calls into the given buffers, for one run."""
    _guest_output.streams = (stdout, stderr)
    _guest_output.random_calls = 0
    try:
        yield
    finally:
        _guest_output.streams = None


def _fd_write(caller: wasmtime.Caller, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
    # Replaces WASI's fd_write: the stdout_custom callback can only fail the write, and a
    # guest that ignores the error would keep flooding until its deadline.
    _charge(caller, HOST_CALL_FUEL)
    streams = getattr(_guest_output, "streams", None)
    if streams is None or fd not in (1, 2):
        return WASI_EBADF
    # wasm hands over i32s, which arrive signed; as pointers and counts they are unsigned.
    iovs, iovs_len, nwritten = iovs & 0xFFFFFFFF, iovs_len & 0xFFFFFFFF, nwritten & 0xFFFFFFFF
    sink: CappedBuffer = streams[fd - 1]
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return WASI_EFAULT
    size = memory.data_len(caller)
    if iovs_len > _MAX_IOVS:
        return WASI_EINVAL
    if iovs + 8 * iovs_len > size or nwritten + 4 > size:
        return WASI_EFAULT
    vectors = list(struct.iter_unpack("<II", memory.read(caller, iovs, iovs + 8 * iovs_len)))
    if any(pointer + length > size for pointer, length in vectors):
        return WASI_EFAULT
    # Every byte the guest asks to write is paid for, kept or not: past the stderr cap the
    # bytes are only counted, but a guest asking for a GiB a call still asked for it.
    requested = min(sum(length for _, length in vectors), _MAX_WRITE)
    _charge(caller, IOVEC_FUEL * len(vectors) + WRITE_BYTE_FUEL * requested)
    total = 0
    for pointer, length in vectors:
        length = min(length, _MAX_WRITE - total)
        take = min(length, sink.room)
        if take:
            sink.data += memory.read(caller, pointer, pointer + take)
        total += length
    sink.attempted += total
    if sink.strict and sink.overflowed:
        raise OutputLimitExceeded
    memory.write(caller, struct.pack("<I", total), nwritten)
    return 0


# Runs are deterministic, so that a receipt can be replayed to the same output hash: the
# clock stands still and "random" bytes are the same stream on every run.
FIXED_TIME_NS = 1_700_000_000 * 10**9
RANDOM_SEED = b"agent-exchange/random/v1"
_MAX_RANDOM = 1 << 20  # host calls cannot be interrupted: keep each one short


def _clock_time_get(caller: wasmtime.Caller, clock_id: int, precision: int, time_ptr: int) -> int:
    _charge(caller, HOST_CALL_FUEL)
    memory = caller.get("memory")
    time_ptr &= 0xFFFFFFFF
    if not isinstance(memory, wasmtime.Memory) or time_ptr + 8 > memory.data_len(caller):
        return WASI_EFAULT
    memory.write(caller, struct.pack("<Q", FIXED_TIME_NS), time_ptr)
    return 0


def _random_get(caller: wasmtime.Caller, buf: int, length: int) -> int:
    _charge(caller, HOST_CALL_FUEL)
    memory = caller.get("memory")
    buf, length = buf & 0xFFFFFFFF, length & 0xFFFFFFFF
    if length > _MAX_RANDOM:
        return WASI_EINVAL
    _charge(caller, RANDOM_BYTE_FUEL * length)
    if not isinstance(memory, wasmtime.Memory) or buf + length > memory.data_len(caller):
        return WASI_EFAULT
    call = getattr(_guest_output, "random_calls", 0)
    _guest_output.random_calls = call + 1
    stream = hashlib.shake_256(RANDOM_SEED + call.to_bytes(8, "little")).digest(length)
    memory.write(caller, stream, buf)
    return 0


def _poll_oneoff(
    caller: wasmtime.Caller, in_: int, out: int, nsubscriptions: int, nevents: int
) -> int:
    # WASI's poll_oneoff sleeps inside a host call, where epoch deadlines cannot reach.
    _charge(caller, HOST_CALL_FUEL)
    return WASI_ENOTSUP


def define(linker: wasmtime.Linker) -> None:
    """wasmtime's WASI, with the functions above in place of its own."""
    linker.define_wasi()
    linker.allow_shadowing = True
    i32 = wasmtime.ValType.i32()
    four_i32_to_i32 = wasmtime.FuncType([i32, i32, i32, i32], [i32])
    linker.define_func(WASI_MODULE, "fd_write", four_i32_to_i32, _fd_write, access_caller=True)
    linker.define_func(
        WASI_MODULE, "poll_oneoff", four_i32_to_i32, _poll_oneoff, access_caller=True
    )
    i64 = wasmtime.ValType.i64()
    linker.define_func(
        WASI_MODULE,
        "clock_time_get",
        wasmtime.FuncType([i32, i64, i32], [i32]),
        _clock_time_get,
        access_caller=True,
    )
    linker.define_func(
        WASI_MODULE,
        "random_get",
        wasmtime.FuncType([i32, i32], [i32]),
        _random_get,
        access_caller=True,
    )
    linker.allow_shadowing = False
