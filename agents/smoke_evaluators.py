"""smoke.py's checks of the two sample evaluators, schemacheck and countcheck.

Every verdict must be the exact line evaluator_reference.py computes: fixed cases, then
random documents, schemas, outputs and malformed inputs, and real outputs of the
wordcount and wordstats agents (right ones accepted, altered ones rejected).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import evaluator_reference as reference

if TYPE_CHECKING:
    from smoke import Checks

CONTRACT = json.loads(
    (Path(__file__).resolve().parent / "contracts" / "wordstats.json").read_text()
)
KEYS = ["a", "b", "c", "d~", "e/f", "é"]
TEXT = ["a", "b", "é", "😀", "~", "/", '"', "\\", "\n", " ", "\u3000", "'", ".", "x\u00a0y"]
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object", "nothing"]
NOT_JSON = ["", " ", "nope", "[1,]", "01", "1.", ".5", "{'a': 1}", '"\\x"', "NaN", "-Infinity"]
NOT_JSON += [
    "[1] [2]",
    '{"a" 1}',
    "tru",
    '"tab\there"',
    "\ufeff{}",
    '{"a":1',
    "[" * 101 + "]" * 101,
]


def random_value(rng: random.Random, level: int = 0) -> Any:
    roll = rng.randrange(10 if level < 3 else 6)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice([rng.randrange(-5, 6), rng.randrange(-5, 6) / 2, 1e300, 0.1])
    if roll in (3, 4, 5):
        return "".join(rng.choice(TEXT) for _ in range(rng.randrange(4)))
    if roll in (6, 7):
        return [random_value(rng, level + 1) for _ in range(rng.randrange(4))]
    return {k: random_value(rng, level + 1) for k in rng.sample(KEYS, rng.randrange(4))}


def schema_for(rng: random.Random, value: Any, level: int = 0) -> Any:
    """A schema of the supported keywords, which `value` mostly satisfies."""
    if rng.random() < 0.1:
        return rng.choice([True, False, {}])
    schema: dict[str, Any] = {}
    kind = reference.kind(value)
    if rng.random() < 0.7:
        name = "integer" if kind == "number" and reference.is_whole(value) else kind
        schema["type"] = name if rng.random() < 0.5 else [rng.choice(TYPES), name, 7]
    if rng.random() < 0.15:
        schema["enum"] = [random_value(rng), value] if rng.random() < 0.7 else [1, "x"]
    if rng.random() < 0.1:
        schema["const"] = value if rng.random() < 0.7 else random_value(rng)
    if rng.random() < 0.1:
        schema["minimum"] = "wrong kind, ignored"
    if kind == "number":
        for keyword in rng.sample(
            ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"], 2
        ):
            schema[keyword] = rng.randrange(-3, 4)
    elif kind in ("string", "array"):
        least, most = ("minLength", "maxLength") if kind == "string" else ("minItems", "maxItems")
        schema[least], schema[most] = rng.randrange(3), rng.randrange(1, 4)
        if kind == "array" and value:
            schema["items"] = schema_for(rng, rng.choice(value), level + 1)
    elif kind == "object":
        names = list(value)
        schema["required"] = rng.sample(names, len(names) // 2) + ["zz"] * (rng.random() < 0.1)
        schema["properties"] = {
            n: schema_for(rng, value[n], level + 1) for n in rng.sample(names, len(names) // 2)
        }
        schema["additionalProperties"] = rng.choice([False, True, None, {"type": "string"}])
        if schema["additionalProperties"] is None:
            del schema["additionalProperties"]
    return schema


def changed(rng: random.Random, value: Any) -> Any:
    """`value`, or (half the time) a value close to it."""
    if rng.random() < 0.5:
        return value
    if isinstance(value, dict) and value:
        name = rng.choice(list(value))
        return {**value, name: changed(rng, value[name])} if rng.random() < 0.7 else {}
    if isinstance(value, list) and value:
        return value[:-1] if rng.random() < 0.5 else [changed(rng, v) for v in value]
    return random_value(rng)


def dumps(rng: random.Random, value: Any) -> str:
    return json.dumps(
        value,
        ensure_ascii=rng.random() < 0.5,
        indent=rng.choice([None, None, 1, "\t"]),
        separators=rng.choice([None, (",", ":")]),
    )


def evaluator_input(rng: random.Random, task_input: Any, output: str, schema: Any) -> bytes:
    doc: dict[str, Any] = {"task_input": task_input, "output": output}
    if rng.random() < 0.9:
        doc["contract"] = {"version": 1, "input_schema": None, "output_schema": schema}
    return dumps(rng, doc).encode()


MALFORMED = [
    b"",
    b"[]",
    b"not json",
    b'{"output": 5}',
    b'{"task_input": "a b"}',
    b'{"output": "{}"} x',
    b'{"output": "\xff"}',
    b'{"output": "\xed\xa0\x80"}',
    b'{"output": "\xc0\xaf"}',
    b'{"output": "{}", "contract": 5}',
    b'{"output": "{}", "contract": {"output_schema": "string"}}',
    b'{"output": "{}", "contract": {"output_schema": null}}',
    b'{"output": "{}", "contract": null}',
    b'{"output": "{}", "task_input": ' + b"[" * 99 + b"]" * 99 + b"}",
    b'{"output": "{}", "task_input": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"output": "{\\"a\\": 1}", "task_input": {"expected": {"a": 1.0}}}',
    b'{"output": "[1, true]", "task_input": {"expected": [1.0, 1]}}',
    b'{"output": "\\ud83d\\ude00", "task_input": {"expected": 1}}',
    # A long first failure is cut at 200 bytes, here inside a two-byte character.
    json.dumps(
        {
            "output": json.dumps({"\u00e9" * 150: 1}),
            "contract": {"output_schema": {"additionalProperties": False}},
        }
    ).encode(),
    json.dumps({"output": "1", "contract": {"output_schema": {"type": "x" * 300}}}).encode(),
]


def evaluators(checks: Checks, rng: random.Random) -> None:
    def same_as_reference(slug: str, data: bytes, check: Any) -> None:
        run = checks.ok(slug, data)
        want = check(data)
        checks.expect(
            f"{slug} {data[:60]!r}", run.stdout == want, f"got {run.stdout!r}, want {want!r}"
        )

    for data in MALFORMED:
        same_as_reference("schemacheck", data, reference.schemacheck)
        same_as_reference("countcheck", data, reference.countcheck)
    accepted = rejected = 0
    for _ in range(300):
        value = random_value(rng)
        schema = schema_for(rng, value)
        task_input: Any = rng.choice(["plain", {"text": "x"}, {"expected": changed(rng, value)}])
        if rng.random() < 0.3 and isinstance(value, dict):
            task_input = {"expected": {k: changed(rng, v) for k, v in value.items() if k != "a"}}
        output = dumps(rng, changed(rng, value)) if rng.random() < 0.9 else rng.choice(NOT_JSON)
        data = evaluator_input(rng, task_input, output, schema)
        same_as_reference("schemacheck", data, reference.schemacheck)
        verdict = json.loads(checks.runner.run("schemacheck", data).stdout)
        accepted, rejected = accepted + verdict["accept"], rejected + (not verdict["accept"])
    checks.expect("schemacheck both accepts and rejects", accepted > 50 and rejected > 50)

    # Real outputs of wordstats under its own contract, and of wordcount.
    for _ in range(40):
        options = {
            "text": "".join(rng.choice(TEXT) for _ in range(rng.randrange(30))),
            "min_length": rng.randrange(1, 3),
            "top": rng.randrange(3),
        }
        stdin = json.dumps(options, separators=(",", ":"), sort_keys=True).encode()
        output = checks.ok("wordstats", stdin).stdout.decode()
        truth = json.loads(output)
        expected = changed(rng, {"words": truth["words"], "unique": truth["unique"]})
        for slug, check in (
            ("schemacheck", reference.schemacheck),
            ("countcheck", reference.countcheck),
        ):
            for said in (output, output.replace('"words": ', '"words": 1')):
                data = evaluator_input(
                    rng, {**options, "expected": expected}, said, CONTRACT["output_schema"]
                )
                same_as_reference(slug, data, check)
        text = "".join(rng.choice(TEXT) for _ in range(rng.randrange(40)))
        output = checks.ok("wordcount", text.encode()).stdout.decode()
        count = json.loads(output)["words"]
        for said in (
            output,
            output.replace(f'"words": {count}', f'"words": {count + rng.randrange(1, 3)}'),
        ):
            data = evaluator_input(rng, text, said, None)
            same_as_reference("countcheck", data, reference.countcheck)
            checks.expect(
                f"countcheck accepts only wordcount's own count of {text[:30]!r}",
                json.loads(checks.runner.run("countcheck", data).stdout)["accept"]
                == (said == output),
            )
    for task_input in [None, 3, ["a b"], {"text": 3}, {"words": "a b"}]:
        same_as_reference(
            "countcheck",
            evaluator_input(rng, task_input, '{"words": 2}', None),
            reference.countcheck,
        )
    for said in [
        *NOT_JSON,
        "[]",
        "{}",
        '{"words": -1}',
        '{"words": 1.5}',
        '{"words": "2"}',
        '{"words": true}',
    ]:
        same_as_reference(
            "countcheck", evaluator_input(rng, "a b", said, None), reference.countcheck
        )
    for said in [
        '{"words": 2.0}',
        '{"words": 2e0, "lines": "any"}',
        '{"words": 9007199254740992}',
        "[2]",
    ]:
        same_as_reference(
            "countcheck", evaluator_input(rng, "a b", said, None), reference.countcheck
        )


def bench(runner: Any) -> None:
    """Fuel of the evaluators' runs in agents/README.md's table."""
    top = [{"word": f"w{i}", "count": 1} for i in range(50)]
    numbers = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    text = "lorem ipsum " * 87_000
    for slug, doc in [
        (
            "schemacheck",
            {
                "task_input": {"text": "x", "expected": {"words": 1, "unique": 1}},
                "output": json.dumps({"words": 1, "unique": 1, "top": top}),
                "contract": CONTRACT,
            },
        ),
        (
            "schemacheck",
            {
                "task_input": None,
                "output": json.dumps(list(range(150_000))),
                "contract": {"output_schema": numbers},
            },
        ),
        ("countcheck", {"task_input": text, "output": '{"words": 174000}'}),
    ]:
        data = json.dumps(doc).encode()
        run = runner.run(slug, data)
        assert run.exit_code == 0 and b'"accept": true' in run.stdout, run.stdout
        print(
            f"  {slug} of {len(data):,} bytes: fuel={run.fuel_used:,}  "
            f"time={run.elapsed * 1000:.1f} ms"
        )
