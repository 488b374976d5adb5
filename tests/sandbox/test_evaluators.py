"""The sample evaluators (SPEC §21) under the platform's own sandbox: real wasmtime, fuel
and memory limits as a task's, exact verdicts. agents/smoke.py checks them against a
Python reference on random inputs; here a few verdicts are pinned, and the real outputs
of wordcount and wordstats go through them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from execution.engine import outputs, sandbox
from execution.engine.validation import validate_wasm

from .conftest import limits, sha256

AGENTS = Path(__file__).resolve().parents[2] / "agents"
WORDSTATS = json.loads((AGENTS / "contracts" / "wordstats.json").read_text())


def binary(slug: str) -> bytes:
    return (AGENTS / "dist" / f"{slug}.wasm").read_bytes()


def run(slug: str, stdin: bytes) -> sandbox.RunResult:
    data = binary(slug)
    result = sandbox.run(
        sha256=sha256(data), load=lambda: data, stdin=stdin, argv=[slug], limits=limits()
    )
    assert result.ok, result.detail
    assert result.exit_code == 0
    return result


def contract(slug: str) -> dict[str, Any]:
    return json.loads((AGENTS / "contracts" / f"{slug}.json").read_text())


def evaluate(slug: str, task_input: Any, output: str, output_schema: Any = None) -> str:
    document = {
        "task_input": task_input,
        "output": output,
        "contract": {"version": 1, "input_schema": None, "output_schema": output_schema},
    }
    stdout = run(slug, json.dumps(document).encode()).stdout.decode()
    # Every verdict passes the evaluator's own output schema, as the platform checks it.
    assert list(json.loads(stdout)) == ["accept", "score", "reason"]
    verdict = outputs.check_output(contract(slug)["output_schema"], stdout.encode(), timeout_s=5)
    assert verdict.kind == outputs.OK, verdict.message
    return stdout


@pytest.mark.parametrize("slug", ["schemacheck", "countcheck"])
def test_the_evaluators_pass_the_upload_checks_and_their_contracts_compile(slug):
    validate_wasm(binary(slug))
    for schema in contract(slug).values():
        assert outputs.compile_schema(schema, timeout_s=5).kind == outputs.OK
    document = {"task_input": "a", "output": "{}", "contract": {"output_schema": None}}
    checked = outputs.check_input(
        contract(slug)["input_schema"], json.dumps(document).encode(), timeout_s=5
    )
    assert checked.kind == outputs.OK, checked.message


def test_schemacheck_accepts_wordstats_output_under_its_contract_with_the_expected_counts():
    options = {"text": "The cat and the hat. The END", "ignore_case": True, "top": 2}
    output = run("wordstats", json.dumps(options).encode()).stdout.decode()
    task_input = {**options, "expected": {"words": 7, "unique": 5}}

    verdict = evaluate("schemacheck", task_input, output, WORDSTATS["output_schema"])

    # JSON 1; the object: type 1, required 3, words 2 (type, minimum), unique 2, top 1 (type)
    # and 7 per item (type, required 2, word's type, count's type and minimum, no other
    # members), no other members 1; expected 2.
    assert verdict == '{"accept": true, "score": 1, "reason": "27 of 27 checks passed"}\n'


def test_schemacheck_scores_the_share_of_checks_passed_and_names_the_first_failure():
    output = '{"words": 7, "unique": 5, "top": [{"word": "the", "count": 0}], "more": 1}'
    task_input = {"text": "...", "expected": {"words": 7, "unique": 4}}

    verdict = evaluate("schemacheck", task_input, output, WORDSTATS["output_schema"])

    # 20 checks as above with one item; failing: count's minimum, "more", expected unique.
    assert verdict == (
        '{"accept": false, "score": 0.85, "reason": "17 of 20 checks passed; '
        'first failure: output/top/0/count: is less than minimum"}\n'
    )


def test_schemacheck_without_a_schema_checks_json_and_a_whole_expected_value():
    assert evaluate("schemacheck", {"expected": [1, "a"]}, '[1.0, "a"]') == (
        '{"accept": true, "score": 1, "reason": "2 of 2 checks passed"}\n'
    )
    assert evaluate("schemacheck", {"expected": [1, "a"]}, '[true, "a"]') == (
        '{"accept": false, "score": 0.5, "reason": "1 of 2 checks passed; '
        'first failure: output: is not the expected value"}\n'
    )
    assert evaluate("schemacheck", "plain text", "plain text") == (
        '{"accept": false, "score": 0, "reason": "0 of 1 checks passed; '
        'first failure: output: is not JSON"}\n'
    )


@pytest.mark.parametrize("slug", ["schemacheck", "countcheck"])
@pytest.mark.parametrize(
    "stdin",
    [b"", b"[]", b"\xff", b'{"task_input": "a b"}', b'{"output": 3}', b'{"output": "{}"} x'],
)
def test_an_input_that_is_not_an_evaluators_is_rejected_with_a_verdict(slug, stdin):
    assert run(slug, stdin).stdout == (
        b'{"accept": false, "score": 0, "reason": '
        b'"the evaluator\'s input is not a JSON object with a string \\"output\\""}\n'
    )


def test_countcheck_accepts_wordcounts_own_output_and_scores_a_wrong_count_by_its_distance():
    text = "h\u00e9llo w\u00f6rld \u2014 \U0001f600\nfoo\u3000bar"
    output = run("wordcount", text.encode()).stdout.decode()
    assert json.loads(output)["words"] == 6

    assert evaluate("countcheck", text, output) == (
        '{"accept": true, "score": 1, "reason": '
        '"the output\'s \\"words\\" is 6, the number of words in the input"}\n'
    )
    assert evaluate("countcheck", text, output.replace('"words": 6', '"words": 4')) == (
        '{"accept": false, "score": 0.6666, "reason": '
        '"the output\'s \\"words\\" is 4, but the input has 6 words"}\n'
    )


def test_countcheck_counts_wordstats_words_by_its_rule_and_minimum_length():
    options = {"text": "it's a cat-and-dog caf\u00e9, OK?", "min_length": 3}
    output = run("wordstats", json.dumps(options).encode()).stdout.decode()
    assert json.loads(output)["words"] == 5  # it's, cat, and, dog, café

    assert evaluate("countcheck", options, output) == (
        '{"accept": true, "score": 1, "reason": '
        '"the output\'s \\"words\\" is 5, the number of words in the input"}\n'
    )
    assert evaluate("countcheck", {"text": "one"}, '{"words": 0}') == (
        '{"accept": false, "score": 0, "reason": '
        '"the output\'s \\"words\\" is 0, but the input has 1 word"}\n'
    )


def test_countcheck_rejects_what_it_cannot_count():
    assert evaluate("countcheck", {"words": "a b"}, '{"words": 2}') == (
        '{"accept": false, "score": 0, "reason": '
        '"the task input is neither a text nor an object with a string \\"text\\""}\n'
    )
    for output in ["2", '{"words": "2"}', '{"words": 1.5}', '{"words": -1}', "not json"]:
        assert evaluate("countcheck", "a b", output) == (
            '{"accept": false, "score": 0, "reason": '
            '"the output is not a JSON object with a whole-number \\"words\\""}\n'
        )
