"""The per-process WebAssembly runtime: engine, linker, epoch ticker and compiled-module cache.

Everything is created lazily, in the process that runs wasm. django-q2 forks its workers,
and threads do not survive a fork: an engine made before the fork would keep an epoch
ticker that no longer exists, so deadlines would silently stop firing in the children.

Compiled modules are kept in a bounded in-memory LRU and as serialized artifacts on disk.
An artifact is native code, so it is only ever loaded when it carries a MAC (keyed with
SECRET_KEY) that this code wrote over its exact bytes, the wasm SHA-256, the wasmtime
version and the engine configuration; anything else is discarded and recompiled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import wasmtime
from django.conf import settings
from django.utils.crypto import salted_hmac

from execution.engine import host

logger = logging.getLogger(__name__)

WASMTIME_VERSION = metadata.version("wasmtime")
WASM_MAGIC = b"\0asm"
EPOCH_TICK_MS = 10

# Options applied to every engine. Their hash names the on-disk artifacts: wasmtime loads
# an artifact compiled with another optimisation level or NaN mode without complaint.
ENGINE_CONFIG: dict[str, bool | str] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
    # Bit-identical floats on every CPU, so a receipt replays to the same output hash.
    "cranelift_nan_canonicalization": True,
    "wasm_relaxed_simd_deterministic": True,
    # Shared or extra memories, and GC heaps, would live outside the per-store memory limit.
    "wasm_threads": False,
    "wasm_multi_memory": False,
    "wasm_gc": False,
    # wasmtime compiles on a process-wide thread pool; in a child forked after the parent
    # compiled anything, that pool's threads are gone and the next compile hangs forever.
    "parallel_compilation": False,
}

_ARTIFACT_MAGIC = b"AXCWASM\x01"
_MAC_SIZE = hashlib.sha256().digest_size
_MAC_SALT = "execution.engine.modules.artifact"


class ModuleLoadError(Exception):
    """The stored bytes are not the binary asked for, or no longer compile and link here."""


# --- The per-process runtime ------------------------------------------------------------


@dataclass(frozen=True)
class CompiledModule:
    sha256: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    initial_memory_bytes: int


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    compiles: int = 0
    rejected_artifacts: int = 0


class _Ticker(threading.Thread):
    def __init__(self, engine: wasmtime.Engine) -> None:
        super().__init__(name="wasm-epoch-ticker", daemon=True)
        self._engine = engine
        self.stopped = threading.Event()

        self._epoch_start = time.monotonic()
        self._ticks_made = 0

    def run(self) -> None:
        # Ticks follow the monotonic clock rather than counting sleeps, which each overrun
        # a little: over a 60 s deadline those overruns would add up to more than a second.
        period = EPOCH_TICK_MS / 1000
        while not self.stopped.wait(
            max(0.0, self._epoch_start + (self._ticks_made + 1) * period - time.monotonic())
        ):
            due = int((time.monotonic() - self._epoch_start) / period)
            while self._ticks_made < due:
                self._engine.increment_epoch()
                self._ticks_made += 1

    def behind(self) -> int:
        """Ticks already due that this thread has not made yet (it was not scheduled in
        time, on a busy machine): they will come in a burst, and count time gone by."""
        due = int((time.monotonic() - self._epoch_start) / (EPOCH_TICK_MS / 1000))
        return max(0, due - self._ticks_made)


@dataclass
class Runtime:
    pid: int
    engine: wasmtime.Engine
    linker: wasmtime.Linker
    config_hash: str
    ticker: _Ticker
    cache: OrderedDict[str, CompiledModule] = field(default_factory=OrderedDict)
    stats: CacheStats = field(default_factory=CacheStats)
    lock: threading.Lock = field(default_factory=threading.Lock)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def _start_runtime() -> Runtime:
    config = wasmtime.Config()
    for name, value in ENGINE_CONFIG.items():
        setattr(config, name, value)
    engine = wasmtime.Engine(config)

    linker = wasmtime.Linker(engine)
    host.define(linker)

    ticker = _Ticker(engine)
    ticker.start()
    config_hash = hashlib.sha256(json.dumps(ENGINE_CONFIG, sort_keys=True).encode()).hexdigest()
    return Runtime(os.getpid(), engine, linker, config_hash[:16], ticker)


def runtime() -> Runtime:
    """This process's engine, linker, ticker and cache, created on first use."""
    global _runtime
    current = _runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = _start_runtime()
        return _runtime


def reset() -> None:
    """Drop this process's runtime and in-memory cache; the next use starts afresh."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.ticker.stopped.set()
        _runtime = None


def _forget_runtime_after_fork() -> None:
    # The parent's lock may have been held by a thread that does not exist here.
    global _runtime, _runtime_lock
    _runtime_lock = threading.Lock()
    _runtime = None


os.register_at_fork(after_in_child=_forget_runtime_after_fork)


def stats() -> CacheStats:
    return replace(runtime().stats)


def clear_memory_cache() -> None:
    rt = runtime()
    with rt.lock:
        rt.cache.clear()


# --- Compiling and caching ----------------------------------------------------------------


def compile_wasm(data: bytes) -> wasmtime.Module:
    """Compile wasm bytes with this process's engine. Raises `wasmtime.WasmtimeError`."""
    # wasmtime-py parses anything not starting with a NUL byte as WAT text.
    if not data.startswith(WASM_MAGIC):
        raise wasmtime.WasmtimeError("not a WebAssembly binary (bad magic number)")
    rt = runtime()
    module = wasmtime.Module(rt.engine, data)
    with rt.lock:
        rt.stats.compiles += 1
    return module


def get(sha256: str, load: Callable[[], bytes]) -> CompiledModule:
    """The compiled module for `sha256`: from memory, from disk, or by compiling `load()`.

    `load` is only called on a miss. Raises `ModuleLoadError` when the loaded bytes do not
    hash to `sha256` or do not compile and link; lets whatever `load` raises through.
    """
    rt = runtime()
    with rt.lock:
        cached = rt.cache.get(sha256)
        if cached is not None:
            rt.cache.move_to_end(sha256)
            rt.stats.memory_hits += 1
            return cached

    module = _read_artifact(rt, sha256)
    if module is not None:
        with rt.lock:
            rt.stats.disk_hits += 1
        return _remember(rt, sha256, module)

    data = load()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModuleLoadError(f"stored bytes do not hash to {sha256}")
    try:
        module = compile_wasm(data)
    except wasmtime.WasmtimeError as error:
        raise ModuleLoadError(f"{sha256} does not compile: {error}") from error
    compiled = _remember(rt, sha256, module)
    _write_artifact(rt, sha256, module)
    return compiled


def add(sha256: str, module: wasmtime.Module) -> CompiledModule:
    """Cache a module this process has just compiled (in memory and on disk)."""
    rt = runtime()
    compiled = _remember(rt, sha256, module)
    _write_artifact(rt, sha256, module)
    return compiled


def _remember(rt: Runtime, sha256: str, module: wasmtime.Module) -> CompiledModule:
    try:
        pre = rt.linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as error:
        raise ModuleLoadError(f"{sha256} does not link: {error}") from error
    exports = {export.name: export.type for export in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType) or not isinstance(
        exports.get("_start"), wasmtime.FuncType
    ):
        raise ModuleLoadError(f"{sha256} is not a WASI command exporting _start and memory")
    compiled = CompiledModule(sha256, module, pre, memory.limits.min * memory.page_size)
    with rt.lock:
        rt.cache[sha256] = compiled
        rt.cache.move_to_end(sha256)
        while len(rt.cache) > max(1, settings.WASM_MEMORY_CACHE_SIZE):
            rt.cache.popitem(last=False)
    return compiled


def artifact_path(sha256: str) -> Path:
    rt = runtime()
    name = f"{sha256}-wasmtime{WASMTIME_VERSION}-{rt.config_hash}.cwasm"
    return Path(settings.WASM_CACHE_DIR) / name


def _artifact_mac(rt: Runtime, sha256: str, payload: bytes | bytearray) -> bytes:
    mac = salted_hmac(
        _MAC_SALT, f"{sha256}\n{WASMTIME_VERSION}\n{rt.config_hash}\n", algorithm="sha256"
    )
    mac.update(payload)
    return mac.digest()


def _read_artifact(rt: Runtime, sha256: str) -> wasmtime.Module | None:
    path = artifact_path(sha256)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.warning("wasm artifact %s unreadable, recompiling: %s", path.name, error)
        return None

    header = len(_ARTIFACT_MAGIC) + _MAC_SIZE
    payload = blob[header:]
    if not blob.startswith(_ARTIFACT_MAGIC) or len(blob) <= header:
        problem = "bad header"
    elif not hmac.compare_digest(
        blob[len(_ARTIFACT_MAGIC) : header], _artifact_mac(rt, sha256, payload)
    ):
        problem = "MAC mismatch"
    else:
        try:
            return wasmtime.Module.deserialize(rt.engine, payload)
        except wasmtime.WasmtimeError as error:
            problem = f"rejected by wasmtime: {error}"
    logger.warning("wasm artifact %s discarded (%s), recompiling", path.name, problem)
    with rt.lock:
        rt.stats.rejected_artifacts += 1
    with suppress(OSError):
        path.unlink()
    return None


def _write_artifact(rt: Runtime, sha256: str, module: wasmtime.Module) -> None:
    path = artifact_path(sha256)
    try:
        payload = module.serialize()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_ARTIFACT_MAGIC)
                handle.write(_artifact_mac(rt, sha256, payload))
                handle.write(payload)
            # Readers see the old artifact or the whole new one, never a torn write.
            os.replace(temporary, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
    except (OSError, wasmtime.WasmtimeError) as error:
        # The disk cache only saves compile time; a run must not fail because of it.
        logger.warning("could not write wasm artifact %s: %s", path.name, error)
