from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import wasmtime
from django.conf import settings as django_settings

from execution.engine import modules, sandbox

CORPUS = Path(__file__).parent / "corpus"
MiB = 1024 * 1024


@cache
def wasm(name: str) -> bytes:
    """A module of the corpus, compiled from its WAT source."""
    return bytes(wasmtime.wat2wasm((CORPUS / f"{name}.wat").read_text()))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def limits(
    *,
    fuel: int = 1_000_000_000,
    memory_mb: int = 64,
    timeout_ms: int = 2_000,
    stdout_bytes: int = MiB,
    stderr_bytes: int = 64 * 1024,
) -> sandbox.Limits:
    return sandbox.Limits(
        fuel=fuel,
        memory_bytes=memory_mb * MiB,
        timeout_ms=timeout_ms,
        stdout_bytes=stdout_bytes,
        stderr_bytes=stderr_bytes,
    )


def run_corpus(name: str, stdin: bytes = b"", **limit_overrides: int) -> sandbox.RunResult:
    data = wasm(name)
    return sandbox.run(
        sha256=sha256(data),
        load=lambda: data,
        stdin=stdin,
        argv=[name],
        limits=limits(**limit_overrides),
    )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class ResourceUse:
    rss_before: int = 0
    rss_peak: int = 0
    disk_before: int = 0
    disk_after: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before

    @property
    def disk_growth(self) -> int:
        return self.disk_after - self.disk_before


def disk_used() -> int:
    """Bytes used on every filesystem a careless sandbox could write output to."""
    places: list[str | os.PathLike[str]] = [
        tempfile.gettempdir(),
        Path.cwd(),
        django_settings.MEDIA_ROOT,
        django_settings.WASM_CACHE_DIR,
    ]
    devices: dict[int, int] = {}
    for place in places:
        path = Path(place)
        while not path.exists():
            path = path.parent
        devices[os.stat(path).st_dev] = shutil.disk_usage(path).used
    return sum(devices.values())


@contextmanager
def resource_use() -> Iterator[ResourceUse]:
    """Peak RSS (sampled every 2 ms; wasmtime releases the GIL) and disk use around a block."""
    use = ResourceUse(rss_before=rss_bytes(), rss_peak=rss_bytes(), disk_before=disk_used())
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            use.rss_peak = max(use.rss_peak, rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield use
    finally:
        stop.set()
        sampler.join()
        use.rss_peak = max(use.rss_peak, rss_bytes())
        use.disk_after = disk_used()


@pytest.fixture(autouse=True)
def wasm_cache_dir(settings, tmp_path: Path) -> Path:
    """Each test compiles into its own artifact directory, starting from a cold memory cache."""
    settings.WASM_CACHE_DIR = tmp_path / "wasm-cache"
    modules.clear_memory_cache()
    return settings.WASM_CACHE_DIR
