"""Output schemas: compiled and checked in a helper process that can be stopped at a deadline.

A JSON Schema can cost far more than its size suggests: a backtracking regex takes hours
on 40 characters, `anyOf` over `$ref`s doubles its work at every level, and each
`pattern` compiles to an automaton of up to a megabyte. Neither Python nor the Rust
validator can be interrupted once it has started, so nothing here runs in the caller's
process. A long-lived helper (`python -m execution.engine.outputs`) compiles the schema
with `jsonschema-rs`, whose regex engine (the `regex` crate) matches in linear time, and
validates under an address-space limit; when an answer does not come by the deadline, the
helper is killed and a new one is started on next use.

One helper per process, started lazily and re-created after a fork (a child must not
share its parent's pipes). It imports nothing of the project, so it starts in a fraction
of a second and holds nothing secret.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every compiled pattern is at most this big (the regex crate's default is 10 MiB; one
# such pattern takes ~50 ms to compile). Ordinary patterns need a few KiB; Unicode-heavy
# ones like `^.{0,1000}$` up to a MiB.
REGEX_SIZE_LIMIT = 1 << 20
REGEX_DFA_SIZE_LIMIT = 1 << 20
# Address space of the helper: the interpreter, a 1 MiB document as Python objects and
# the compiled schema fit many times over; a schema whose automata would not is refused.
HELPER_ADDRESS_SPACE = 1 << 30
HELPER_START_SECONDS = 30.0
# A check always gets this long, even when the run used up its whole timeout: a task may
# end this much after its deadline, and an ordinary check takes well under a millisecond.
MIN_CHECK_SECONDS = 0.1
CACHED_VALIDATORS = 64
MESSAGE_CHARS = 500

_OK, _SCHEMA, _NOT_JSON, _FAILS, _NO_MEMORY, _ERROR, _READY = b"0SJFMER"
_COMPILE, _VALIDATE, _INPUT = b"C", b"V", b"I"


@dataclass(frozen=True)
class Verdict:
    """How a check ended. `kind` is one of the constants below; `message` says why."""

    kind: str
    message: str = ""
    # For a document that fails its schema (`check_input`): the JSON pointer of the first
    # failing place; for a missing required property, the pointer it would have.
    path: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == OK


OK = "ok"
SCHEMA_INVALID = "schema_invalid"  # the schema does not compile
NOT_JSON = "not_json"  # the output is not a JSON document
FAILS = "fails"  # the output does not satisfy the schema
TOO_SLOW = "too_slow"  # no answer by the deadline
TOO_BIG = "too_big"  # the check went over the helper's memory
BUSY = "busy"  # the helper was checking for others all the while it could be waited for


class CheckerUnavailable(RuntimeError):
    """The helper process could not be started or answered nonsense: a platform fault."""


def compile_schema(schema: Any, *, timeout_s: float, wait_s: float | None = None) -> Verdict:
    """Whether `schema` compiles (meta-schema and every pattern): OK or SCHEMA_INVALID,
    or TOO_SLOW / TOO_BIG when compiling it takes more than `timeout_s` or the memory.

    The helper checks one schema at a time: waiting for it while it checks others' is not
    this schema's time. With `wait_s`, the wait is bounded apart (BUSY past it) and
    `timeout_s` starts once the helper is this check's."""
    return _checker().ask(_COMPILE + _frame(_dump(schema)), timeout_s, wait_s=wait_s)


def check_output(schema: Any, output: bytes, *, timeout_s: float) -> Verdict:
    """Whether `output` is a JSON document that satisfies `schema`, decided by `timeout_s`."""
    return _checker().ask(_VALIDATE + _frame(_dump(schema)) + _frame(output), timeout_s)


def check_input(
    schema: Any, document: bytes, *, timeout_s: float, wait_s: float | None = None
) -> Verdict:
    """Whether the JSON `document` (a task's input) satisfies `schema`, as `check_output`
    decides for outputs; a failure's `path` is the JSON pointer of the first failing place.
    `wait_s` as for `compile_schema`: the wait for the checker is bounded apart."""
    verdict = _checker().ask(
        _INPUT + _frame(_dump(schema)) + _frame(document), timeout_s, wait_s=wait_s
    )
    if verdict.kind != FAILS:
        return verdict
    found = json.loads(verdict.message)
    return Verdict(FAILS, found["message"], path=found["path"])


def _dump(schema: Any) -> bytes:
    return json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()


def _frame(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


# --- The parent's side -------------------------------------------------------------------


class _OutOfTime(Exception):
    pass


class _HelperGone(Exception):
    pass


class _Turns:
    """A lock taken in the order it was asked for: a check waits for the ones asked before
    it and no longer (a plain lock may hand itself to a later asker again and again, so
    that one caller keeping the checker busy starves the others)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.waiting: deque[object] = deque()
        self.held = False

    def acquire(self, timeout: float) -> bool:
        me = object()
        deadline = time.monotonic() + timeout
        with self.changed:
            self.waiting.append(me)
            while self.held or self.waiting[0] is not me:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.waiting.remove(me)
                    self.changed.notify_all()
                    return False
                self.changed.wait(left)
            self.waiting.popleft()
            self.held = True
            return True

    def release(self) -> None:
        with self.changed:
            self.held = False
            self.changed.notify_all()


class _Checker:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = _Turns()
        self.process: subprocess.Popen[bytes] | None = None

    def ask(self, request: bytes, timeout_s: float, *, wait_s: float | None = None) -> Verdict:
        deadline = time.monotonic() + max(0.0, timeout_s)
        if wait_s is None:  # the wait counts against the timeout
            if not self.lock.acquire(timeout=max(0.0, timeout_s)):
                return Verdict(TOO_SLOW, _too_slow(timeout_s))
        else:
            if not self.lock.acquire(timeout=max(0.0, wait_s)):
                return Verdict(BUSY, f"the checker stayed busy for {wait_s:g} s")
            deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            for attempt in range(2):
                # Starting a helper is the platform's cost, not the check's: off the clock.
                started = time.monotonic()
                process = self._running()
                deadline += time.monotonic() - started
                try:
                    _send(process, request, deadline)
                    status, message = _receive(process, deadline)
                    break
                except _OutOfTime:
                    self.stop()
                    return Verdict(TOO_SLOW, _too_slow(timeout_s))
                except _HelperGone:
                    # The check itself ends a helper only by aborting when an allocation
                    # fails under the address-space limit. One killed from outside (before
                    # or while it took the request: with the thread that started it, by an
                    # operator) gets the request again, once, from a new helper.
                    if self.stop() != -signal.SIGKILL or attempt:
                        return Verdict(TOO_BIG, "the check ran out of memory")
            else:  # pragma: no cover - the loop always breaks or returns
                raise CheckerUnavailable("the output checker did not answer")
        finally:
            self.lock.release()
        kinds = {_OK: OK, _SCHEMA: SCHEMA_INVALID, _NOT_JSON: NOT_JSON, _FAILS: FAILS}
        if status == _NO_MEMORY:
            return Verdict(TOO_BIG, "the check ran out of memory")
        if status not in kinds:
            raise CheckerUnavailable(f"output checker failed: {message}")
        return Verdict(kinds[status], message)

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is not None and self.process.poll() is None:
            return self.process
        self.stop()
        root = Path(__file__).resolve().parents[2]
        process = subprocess.Popen(
            [sys.executable, "-m", "execution.engine.outputs"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        self.process = process
        try:
            ready, _ = _receive(process, time.monotonic() + HELPER_START_SECONDS)
        except (_OutOfTime, _HelperGone) as error:
            self.stop()
            raise CheckerUnavailable("the output checker did not start") from error
        if ready != _READY:
            self.stop()
            raise CheckerUnavailable("the output checker did not start")
        return process

    def stop(self) -> int | None:
        """Kill the helper (if it still runs); its exit status, None when there was none."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        returncode = process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        return returncode


def _too_slow(timeout_s: float) -> str:
    return f"the check did not finish within {timeout_s * 1000:.0f} ms"


def _send(process: subprocess.Popen[bytes], data: bytes, deadline: float) -> None:
    assert process.stdin is not None
    fd = process.stdin.fileno()
    view = memoryview(data)
    os.set_blocking(fd, False)
    try:
        while view:
            _wait(fd, deadline, write=True)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise _HelperGone from error
    finally:
        os.set_blocking(fd, True)


def _receive(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, str]:
    head = _read_exactly(process, 5, deadline)
    (size,) = struct.unpack("<I", head[1:])
    return head[0], _read_exactly(process, size, deadline).decode(errors="replace")


def _read_exactly(process: subprocess.Popen[bytes], size: int, deadline: float) -> bytes:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    chunks = bytearray()
    while len(chunks) < size:
        _wait(fd, deadline, write=False)
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            raise _HelperGone
        chunks += chunk
    return bytes(chunks)


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _OutOfTime
    ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    if not any(ready):
        raise _OutOfTime


_current: _Checker | None = None
_current_lock = threading.Lock()


def _checker() -> _Checker:
    global _current
    with _current_lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Checker()
        return _current


def _forget_after_fork() -> None:
    # The child gets copies of the parent's pipes: close them (the helper stays the
    # parent's) and start its own helper when it needs one.
    global _current, _current_lock
    _current_lock = threading.Lock()
    inherited, _current = _current, None
    if inherited is not None and inherited.process is not None:
        for stream in (inherited.process.stdin, inherited.process.stdout):
            if stream is not None:
                with suppress(OSError):
                    os.close(stream.fileno())


os.register_at_fork(after_in_child=_forget_after_fork)


# --- The helper's side ---------------------------------------------------------------------


def _serve() -> None:  # pragma: no cover - runs in the helper process
    import resource

    import jsonschema_rs

    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (HELPER_ADDRESS_SPACE, HELPER_ADDRESS_SPACE))
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    options = jsonschema_rs.RegexOptions(
        size_limit=REGEX_SIZE_LIMIT, dfa_size_limit=REGEX_DFA_SIZE_LIMIT
    )
    validators: OrderedDict[bytes, Any] = OrderedDict()

    def read(size: int) -> bytes:
        data = requests.read(size)
        if len(data) != size:
            raise SystemExit(0)  # the parent has gone
        return data

    def reply(status: int, message: str = "") -> None:
        body = message.encode(errors="replace")
        replies.write(bytes([status]) + struct.pack("<I", len(body)) + body)
        replies.flush()

    def validator(text: bytes) -> Any:
        found = validators.get(text)
        if found is None:
            found = jsonschema_rs.validator_for(
                json.loads(text),
                pattern_options=options,
                validate_formats=False,
                offline=True,
            )
            validators[text] = found
            while len(validators) > CACHED_VALIDATORS:
                validators.popitem(last=False)
        validators.move_to_end(text)
        return found

    reply(_READY)
    while True:
        op = read(1)
        schema = read(struct.unpack("<I", read(4))[0])
        output = read(struct.unpack("<I", read(4))[0]) if op != _COMPILE else b""
        try:
            try:
                compiled = validator(schema)
            except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as error:
                reply(_SCHEMA, _schema_problem(error))
                continue
            if op == _COMPILE:
                reply(_OK)
                continue
            try:
                document = json.loads(output, parse_constant=_refuse_constant)
            except RecursionError:
                reply(_NOT_JSON, "output is not JSON: nested too deeply")
                continue
            except ValueError as error:
                reply(_NOT_JSON, f"output is not JSON: {_cut(str(error))}")
                continue
            try:
                compiled.validate(document)
            except jsonschema_rs.ValidationError as error:
                reply(_FAILS, _input_failure(error) if op == _INPUT else _failure(error))
                continue
            reply(_OK)
        except MemoryError:
            validators.clear()
            reply(_NO_MEMORY)
        except Exception as error:
            reply(_ERROR, _cut(f"{type(error).__name__}: {error}"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _schema_problem(error: Exception) -> str:
    # jsonschema-rs words it "message", a blank line, then where in the schema.
    return _cut(str(getattr(error, "message", "") or error).split("\n\n")[0])


def _failure(error: Any) -> str:
    where = "/".join(str(part) for part in error.instance_path)
    at = f" at /{where}" if where else ""
    return _cut(f"output fails the schema{at}: {error.message}")


def _input_failure(error: Any) -> str:
    parts = list(error.instance_path)
    if type(error.kind).__name__ == "Required":
        parts.append(error.kind.property)
    # RFC 6901: "~" and "/" inside a name are escaped.
    path = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
    at = f" at {path}" if path else ""
    message = _cut(f"input fails the schema{at}: {error.message}")
    return json.dumps({"path": path, "message": message})


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _die_with_parent() -> None:  # pragma: no cover - runs in the helper process
    # A helper stuck in a check would otherwise outlive a killed parent, burning a CPU.
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:
            raise SystemExit(0)


if __name__ == "__main__":
    _serve()
