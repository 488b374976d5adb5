"""The output checker: linear-time patterns, a hard deadline, a memory cap, and no way for a
schema or an output to hold its caller longer than the time it was given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execution.engine import outputs

# What the task asked for; generous, so a slow check shows up as slow rather than cut off.
TIMEOUT_S = 5.0
# SPEC §13: any one check of a schema and an output of the allowed sizes must be quick.
BOUND_S = 0.5
CATASTROPHIC = {"type": "string", "pattern": "^(a|a)*$"}


@pytest.fixture(autouse=True)
def running_checker():
    """The helper is started (a fraction of a second, once per process) before the clock."""
    assert outputs.compile_schema({}, timeout_s=TIMEOUT_S).ok


def doubling(levels: int) -> dict:
    """A small schema whose evaluation doubles at every level (2^levels checks of "x")."""
    defs: dict = {"d0": {"type": "integer"}}
    for level in range(1, levels + 1):
        below = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {"anyOf": [below, below]}
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


def timed(schema: object, output: bytes, timeout_s: float = TIMEOUT_S):
    started = time.monotonic()
    verdict = outputs.check_output(schema, output, timeout_s=timeout_s)
    return verdict, time.monotonic() - started


def test_a_catastrophic_pattern_is_decided_at_once():
    # Python's `re` needs ~1.4 s for 24 a's here, doubling with each a more (hours for 40).
    verdict, seconds = timed(CATASTROPHIC, b'"' + b"a" * 40 + b'b"')

    assert verdict.kind == outputs.FAILS
    assert verdict.message == (
        'output fails the schema: "' + "a" * 40 + 'b" does not match "^(a|a)*$"'
    )
    assert seconds < 0.1


def test_the_pattern_stays_linear_on_a_megabyte_of_input():
    verdict, seconds = timed(CATASTROPHIC, b'"' + b"a" * 1_000_000 + b'b"')

    assert verdict.kind == outputs.FAILS
    assert len(verdict.message) <= outputs.MESSAGE_CHARS
    assert seconds < BOUND_S


def test_a_matching_output_passes_and_a_failure_names_its_place():
    schema = {"type": "object", "properties": {"tags": {"items": {"type": "string"}}}}

    assert timed(schema, b'{"tags": ["a", "b"]}')[0] == outputs.Verdict(outputs.OK)
    assert timed(schema, b'{"tags": ["a", 2]}')[0] == outputs.Verdict(
        outputs.FAILS, 'output fails the schema at /tags/1: 2 is not of type "string"'
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"this is not json", "output is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"NaN", "output is not JSON: NaN is not a JSON value"),
        (b"[" * 100_000, "output is not JSON: nested too deeply"),
        (b'"\xff"', "output is not JSON: 'utf-8' codec can't decode byte 0xff in position 1: "),
    ],
)
def test_an_output_that_is_not_json_says_so(output, message):
    verdict, _ = timed({"type": "object"}, output)

    assert verdict.kind == outputs.NOT_JSON
    assert verdict.message.startswith(message)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^(?=a)a+$"},  # lookahead: backtracking engines only
        {"type": "string", "pattern": r"^(a+)\1$"},  # backreference
        {"pattern": "([\\s\\S]{100}){100}"},  # compiles to more than a MiB
        {"$ref": "https://example.com/schema.json"},  # never fetched
        {"type": 12},
    ],
)
def test_what_the_checker_cannot_compile_is_schema_invalid(schema):
    started = time.monotonic()

    verdict = outputs.compile_schema(schema, timeout_s=TIMEOUT_S)

    assert verdict.kind == outputs.SCHEMA_INVALID, verdict
    assert time.monotonic() - started < BOUND_S


def test_a_check_past_its_deadline_is_stopped_there_and_the_next_one_works():
    # 2^40 evaluations of a 2 KiB schema: minutes of CPU in any validator that does not memoize.
    verdict, seconds = timed(doubling(40), b'"x"', timeout_s=0.3)

    assert verdict == outputs.Verdict(outputs.TOO_SLOW, "the check did not finish within 300 ms")
    assert 0.3 <= seconds < 0.3 + 0.3
    assert timed(CATASTROPHIC, b'"aaa"')[0].ok


def test_a_schema_that_outgrows_the_checkers_memory_is_refused_within_its_time():
    # 1,500 patterns of ~1 MiB automata each: over the helper's address space.
    patterns = [f"(\\w{{{100 + i % 50}}}){{{20 + i // 50 % 40}}}" for i in range(1500)]

    started = time.monotonic()
    verdict = outputs.compile_schema({"allOf": [{"pattern": p} for p in patterns]}, timeout_s=10)

    assert verdict.kind in (outputs.TOO_BIG, outputs.TOO_SLOW)
    assert time.monotonic() - started < 10.5
    assert timed(CATASTROPHIC, b'"aaa"')[0].ok


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_starts_its_own_checker_and_leaves_the_parents_alone():
    assert timed(CATASTROPHIC, b'"aa"')[0].ok  # the parent's helper is running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        verdict = outputs.check_output(CATASTROPHIC, b'"ab"', timeout_s=TIMEOUT_S)
        os._exit(0 if verdict.kind == outputs.FAILS else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert timed(CATASTROPHIC, b'"aaa"')[0].ok


def test_a_helper_that_died_between_checks_is_replaced_without_failing_a_check():
    helper = outputs._checker().process
    assert helper is not None
    os.kill(helper.pid, signal.SIGKILL)

    assert timed(CATASTROPHIC, b'"aaa"')[0].ok
    assert outputs._checker().process is not helper


def test_a_helper_dies_with_the_process_that_started_it():
    program = (
        "import os, sys\n"
        "from execution.engine import outputs\n"
        "outputs.check_output({}, b'1', timeout_s=5)\n"
        "print(outputs._checker().process.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
    )
    assert parent.stdout is not None
    helper = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(helper):
        time.sleep(0.02)
    assert not _alive(helper)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# --- fuzzing: whatever the schema and the output, a check is quick ---------------------------

atoms = st.sampled_from(["a", "b", ".", "[ab]", r"\d", r"\w", "(a|a)", "(a|aa)", "a*", "(a+)+"])
quantifiers = st.sampled_from(["*", "+", "?", "{2,5}", "{0,3}", "*?"])
regexes = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map(lambda pair: f"({pair[0]}|{pair[1]})"),
        st.tuples(inner, quantifiers).map(lambda pair: f"({pair[0]}){pair[1]}"),
    ),
    max_leaves=8,
).map(lambda body: f"^{body}$")

scalars = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda p: {"type": "string", "pattern": p}, regexes),
    st.builds(lambda n: {"type": "integer", "maximum": n}, st.integers(-5, 5)),
    st.builds(lambda n: {"minLength": n}, st.integers(0, 50)),
    st.just({"enum": ["a", 1, None]}),
    st.just({"const": "aaa"}),
)
schemas = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda s: {"type": "array", "items": s, "uniqueItems": True}, inner),
        st.builds(lambda s: {"type": "object", "additionalProperties": s}, inner),
        st.builds(lambda p, s: {"patternProperties": {p: s}}, regexes, inner),
        st.builds(lambda ss: {"anyOf": ss}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda ss: {"allOf": ss}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda ss: {"oneOf": ss}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda s: {"$defs": {"x": s}, "$ref": "#/$defs/x"}, inner),
    ),
    max_leaves=12,
)
# Strings that make backtracking engines explode, and ordinary JSON around them.
hostile = st.builds(lambda n, tail: "a" * n + tail, st.integers(0, 20_000), st.sampled_from("b!"))
texts = st.one_of(st.text("ab1!", max_size=40), hostile)
documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10), texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(texts.map(lambda t: t[:50]), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, document=documents)
def test_no_schema_and_output_takes_longer_than_the_bound(schema, document):
    if outputs.compile_schema(schema, timeout_s=TIMEOUT_S).kind == outputs.SCHEMA_INVALID:
        return  # refused at submission; never checked at run time
    verdict, seconds = timed(schema, json.dumps(document).encode())

    assert verdict.kind in (outputs.OK, outputs.FAILS), verdict
    assert seconds < BOUND_S, (seconds, schema)
