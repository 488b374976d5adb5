"""The compiled-module cache: memory LRU, disk artifacts, and never trusting a bad artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wasmtime
from django.conf import settings

from execution.engine import modules

from .conftest import run_corpus, sha256, wasm


def never_load() -> bytes:
    raise AssertionError("the binary was loaded for compiling instead of coming from a cache")


def loader(name: str):
    calls: list[str] = []

    def load() -> bytes:
        calls.append(name)
        return wasm(name)

    return load, calls


def compile_into_cache(name: str) -> Path:
    load, _ = loader(name)
    modules.get(sha256(wasm(name)), load)
    return modules.artifact_path(sha256(wasm(name)))


def stats_delta(before: modules.CacheStats) -> dict[str, int]:
    after = modules.stats()
    return {name: getattr(after, name) - getattr(before, name) for name in vars(before)}


def test_first_use_compiles_and_writes_an_artifact():
    before = modules.stats()

    path = compile_into_cache("echo")

    assert stats_delta(before) == {
        "memory_hits": 0,
        "disk_hits": 0,
        "compiles": 1,
        "rejected_artifacts": 0,
    }
    assert path.is_file()
    assert path.parent == Path(settings.WASM_CACHE_DIR)
    assert sha256(wasm("echo")) in path.name and modules.WASMTIME_VERSION in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_second_use_is_a_memory_hit_without_loading():
    compile_into_cache("echo")
    before = modules.stats()

    compiled = modules.get(sha256(wasm("echo")), never_load)

    assert stats_delta(before)["memory_hits"] == 1
    assert compiled is modules.get(sha256(wasm("echo")), never_load)


def test_after_the_memory_cache_is_dropped_the_artifact_is_a_disk_hit():
    compile_into_cache("echo")
    modules.clear_memory_cache()
    before = modules.stats()

    result = run_corpus_without_loading("echo", stdin=b"from disk")

    assert stats_delta(before) == {
        "memory_hits": 0,
        "disk_hits": 1,
        "compiles": 0,
        "rejected_artifacts": 0,
    }
    assert result.stdout == b"from disk"


def run_corpus_without_loading(name: str, stdin: bytes):
    from execution.engine import sandbox

    return sandbox.run(
        sha256=sha256(wasm(name)),
        load=never_load,
        stdin=stdin,
        argv=[name],
        limits=sandbox.Limits.for_task(fuel=10**8, memory_mb=16, timeout_ms=2_000),
    )


CHILD = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from dataclasses import asdict
    from execution.engine import modules, sandbox

    def never_load():
        raise AssertionError("compiled instead of using the artifact")

    result = sandbox.run(
        sha256=sys.argv[1],
        load=never_load,
        stdin=b"from another process",
        argv=["echo"],
        limits=sandbox.Limits.for_task(fuel=10**8, memory_mb=16, timeout_ms=2_000),
    )
    print(json.dumps({"stdout": result.stdout.decode(), "stats": asdict(modules.stats())}))
    """
)


def test_a_new_process_runs_from_the_artifact_without_compiling():
    compile_into_cache("echo")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "marketplace.settings",
        "WASM_CACHE_DIR": str(settings.WASM_CACHE_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
    }

    child = subprocess.run(
        [sys.executable, "-c", CHILD, sha256(wasm("echo"))],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["stdout"] == "from another process"
    assert report["stats"] == {
        "memory_hits": 0,
        "disk_hits": 1,
        "compiles": 0,
        "rejected_artifacts": 0,
    }


def foreign_artifact(path: Path) -> None:
    # A valid artifact of another module, renamed: its MAC binds it to the other hash.
    other = compile_into_cache("trap")
    path.write_bytes(other.read_bytes())


def artifact_from_another_engine(path: Path) -> None:
    # Native code built with other engine settings, under a MAC this runtime would accept:
    # only wasmtime's own check stands between it and execution.
    config = wasmtime.Config()
    config.consume_fuel = False
    config.epoch_interruption = True
    payload = wasmtime.Module(wasmtime.Engine(config), wasm("echo")).serialize()
    rt = modules.runtime()
    mac = modules._artifact_mac(rt, sha256(wasm("echo")), payload)
    path.write_bytes(modules._ARTIFACT_MAGIC + mac + bytes(payload))


def flip_a_payload_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


CORRUPTIONS = {
    "flipped payload byte": (flip_a_payload_byte, "MAC mismatch"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:-100]), "MAC mismatch"),
    "empty": (lambda path: path.write_bytes(b""), "bad header"),
    "header only": (lambda path: path.write_bytes(path.read_bytes()[:40]), "bad header"),
    "not an artifact": (lambda path: path.write_bytes(wasm("echo")), "bad header"),
    "another module's artifact": (foreign_artifact, "MAC mismatch"),
    "compiled by another engine configuration": (
        artifact_from_another_engine,
        "rejected by wasmtime",
    ),
}


@pytest.mark.parametrize(("corrupt", "problem"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_bad_artifact_is_discarded_recompiled_and_replaced(corrupt, problem, caplog):
    path = compile_into_cache("echo")
    corrupt(path)
    modules.clear_memory_cache()
    before = modules.stats()
    load, calls = loader("echo")

    compiled = modules.get(sha256(wasm("echo")), load)

    assert calls == ["echo"]
    assert stats_delta(before)["rejected_artifacts"] == 1
    assert stats_delta(before)["compiles"] == 1
    assert "discarded" in caplog.text and problem in caplog.text
    assert compiled.sha256 == sha256(wasm("echo"))
    # The replacement is good: the next cold start is a disk hit that runs.
    modules.clear_memory_cache()
    assert run_corpus_without_loading("echo", stdin=b"healed").stdout == b"healed"


def test_engine_configuration_change_compiles_afresh(monkeypatch):
    original = compile_into_cache("echo")
    original_bytes = original.read_bytes()

    monkeypatch.setitem(modules.ENGINE_CONFIG, "cranelift_opt_level", "none")
    modules.reset()
    try:
        before = modules.stats()
        changed = compile_into_cache("echo")

        assert changed != original
        assert stats_delta(before)["compiles"] == 1
        assert stats_delta(before)["disk_hits"] == 0
        assert run_corpus("echo", stdin=b"unoptimised").stdout == b"unoptimised"
    finally:
        monkeypatch.undo()
        modules.reset()

    # Back on the first configuration, its artifact is still there and still used.
    assert original.read_bytes() == original_bytes
    assert run_corpus_without_loading("echo", stdin=b"optimised").stdout == b"optimised"
    assert modules.stats().disk_hits == 1


def test_memory_cache_keeps_only_the_most_recently_used(settings):
    settings.WASM_MEMORY_CACHE_SIZE = 2
    for name in ("echo", "trap", "trivial"):
        compile_into_cache(name)
    before = modules.stats()

    modules.get(sha256(wasm("trivial")), never_load)
    modules.get(sha256(wasm("trap")), never_load)
    modules.get(sha256(wasm("echo")), never_load)

    assert stats_delta(before)["memory_hits"] == 2
    assert stats_delta(before)["disk_hits"] == 1


def test_an_unwritable_cache_directory_only_costs_compile_time(settings, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    settings.WASM_CACHE_DIR = blocker / "cache"

    result = run_corpus("echo", stdin=b"no cache")

    assert result.stdout == b"no cache"
    assert "could not write wasm artifact" in caplog.text


def test_wat_text_is_never_compiled():
    # wasmtime-py would parse text as WAT; stored binaries must be binary wasm.
    text = b'(module (memory (export "memory") 1) (func (export "_start")))'

    with pytest.raises(modules.ModuleLoadError, match="does not compile"):
        modules.get(sha256(text), lambda: text)
