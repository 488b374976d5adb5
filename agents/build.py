"""Build the sample agents: agents/src/<name>.c -> agents/dist/<name>.wasm.

Usage (from the project root, with the virtualenv installed):

    .venv/bin/python agents/build.py           # compile every agent, then validate it
    .venv/bin/python agents/build.py --check   # validate the committed modules only

Each source is compiled on its own with zig's C compiler (the ``ziglang``
package) for ``wasm32-wasi``, optimised and stripped. The first compile on a
machine is slow because zig builds wasi-libc into its cache.

A module is valid when it compiles in wasmtime, exports ``_start`` (a function
with no parameters or results) and ``memory``, and imports only from
``wasi_snapshot_preview1`` -- the same rules the platform applies to uploads.
Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

AGENTS_DIR = Path(__file__).resolve().parent
SRC_DIR = AGENTS_DIR / "src"
DIST_DIR = AGENTS_DIR / "dist"

TARGET = "wasm32-wasi"
# zig's default wasm stack is 16 MiB, which would make every module start with
# 16 MiB of linear memory; the agents need only a few KiB of stack.
CFLAGS = ["-O2", "-s", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wl,-z,stack-size=65536"]
WASM_PAGE = 65536
WASI_MODULE = "wasi_snapshot_preview1"


class BuildError(Exception):
    pass


def sources() -> list[Path]:
    found = sorted(SRC_DIR.glob("*.c"))
    if not found:
        raise BuildError(f"no sources in {SRC_DIR.relative_to(AGENTS_DIR.parent)}")
    return found


def compile_agent(source: Path) -> Path:
    """Compile one source into dist/, replacing the old module only on success."""
    output = DIST_DIR / f"{source.stem}.wasm"
    partial = DIST_DIR / f".{source.stem}.wasm.partial"
    command = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        f"--target={TARGET}",
        *CFLAGS,
        source.name,
        "-o",
        str(partial),
    ]
    # Relative source names keep build paths out of the compiler's view.
    result = subprocess.run(command, cwd=SRC_DIR, capture_output=True, text=True, check=False)
    if result.stdout:
        sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise BuildError(f"{source.name}: compiler exited with status {result.returncode}")
    os.replace(partial, output)
    return output


def validate(path: Path) -> int:
    """Raise BuildError unless the module is a WASI command the platform accepts.

    Returns the module's initial linear memory in bytes.
    """
    import wasmtime

    data = path.read_bytes()
    # wasmtime.Module also accepts the text format, so insist on the binary magic.
    if not data.startswith(b"\0asm"):
        raise BuildError(f"{path.name}: not a binary WebAssembly module")
    try:
        module = wasmtime.Module(wasmtime.Engine(), data)
    except wasmtime.WasmtimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise BuildError(f"{path.name}: does not compile: {first_line}") from exc

    exports = {export.name: export.type for export in module.exports}
    start = exports.get("_start")
    if not isinstance(start, wasmtime.FuncType):
        raise BuildError(f"{path.name}: no exported function _start")
    if list(start.params) or list(start.results):
        raise BuildError(f"{path.name}: _start must take and return nothing")
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise BuildError(f"{path.name}: no exported memory")
    for imp in module.imports:
        if imp.module != WASI_MODULE:
            raise BuildError(f"{path.name}: imports {imp.module}.{imp.name}")
    return memory.limits.min * WASM_PAGE


def describe(path: Path, memory: int) -> str:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return f"{path.name:<16} {len(data):>7} bytes  memory {memory // 1024:>5} KiB  sha256 {digest}"


def build() -> None:
    DIST_DIR.mkdir(exist_ok=True)
    for source in sources():
        output = compile_agent(source)
        print(describe(output, validate(output)), flush=True)


def check() -> None:
    expected = {source.stem for source in sources()}
    present = {path.stem for path in DIST_DIR.glob("*.wasm")}
    missing = sorted(expected - present)
    if missing:
        raise BuildError(f"missing modules: {', '.join(m + '.wasm' for m in missing)}")
    orphans = sorted(present - expected)
    if orphans:
        raise BuildError(f"modules without a source: {', '.join(o + '.wasm' for o in orphans)}")
    for name in sorted(expected):
        path = DIST_DIR / f"{name}.wasm"
        print(describe(path, validate(path)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or check the sample WASM agents.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not compile; verify that every agent's module exists and validates",
    )
    args = parser.parse_args(argv)
    try:
        check() if args.check else build()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
