"""What the sample evaluators print, in Python: the references smoke.py checks them against.

``schemacheck(data)`` and ``countcheck(data)`` take an evaluator's input (the bytes on its
stdin) and return the verdict line the agent documented in ``src/schemacheck.c`` and
``src/countcheck.c`` prints for it. Numbers are compared as doubles, as the agents do.
Two corners are left out because the agents and Python differ there on purpose: a lone
surrogate escape (the agents read U+FFFD) and an object naming a member twice.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100
REASON_PART_MAX = 200
MAX_WORDS = 2.0**53
NOT_EVALUATOR_INPUT = 'the evaluator\'s input is not a JSON object with a string "output"'
NOT_A_TEXT = 'the task input is neither a text nor an object with a string "text"'
NO_WORDS = 'the output is not a JSON object with a whole-number "words"'

# Unicode White_Space (wordcount's separators) and wordstats' word bytes.
WHITE_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
WORD = re.compile(rb"[A-Za-z0-9'\x80-\xff]+")


class NotJson(Exception):
    pass


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def strict_json(text: str) -> Any:
    """json.loads without NaN or Infinity and with the agents' nesting limit."""

    def no_constants(name: str) -> Any:
        raise NotJson(name)

    try:
        value = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError, NotJson) as exc:
        raise NotJson(str(exc)) from exc
    if depth(value) > MAX_DEPTH:
        raise NotJson("nested too deeply")
    return value


def verdict(accept: bool, passed: int, total: int, reason: str) -> bytes:
    tenths_of_mille = passed * 10000 // total if total else 10000
    if tenths_of_mille >= 10000:
        score = "1"
    elif tenths_of_mille == 0:
        score = "0"
    else:
        score = f"0.{tenths_of_mille:04d}".rstrip("0")
    shown = json.dumps(reason, ensure_ascii=False)
    answer = "true" if accept else "false"
    return f'{{"accept": {answer}, "score": {score}, "reason": {shown}}}\n'.encode()


def reject(reason: str) -> bytes:
    return verdict(False, 0, 1, reason)


def evaluator_input(data: bytes) -> dict[str, Any]:
    """The parsed input; raises NotJson when it is not an object with a string output."""
    try:
        doc = strict_json(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise NotJson("not UTF-8") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("output"), str):
        raise NotJson("no output")
    return doc


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_whole(value: Any) -> bool:
    if kind(value) != "number":
        return False
    number = float(value)
    return math.isfinite(number) and number.is_integer()


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans apart from numbers, objects in any order."""
    if kind(a) != kind(b):
        return False
    if kind(a) == "number":
        return float(a) == float(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(key in b and same(a[key], b[key]) for key in a)
    return bool(a == b)


def segment(name: str) -> str:
    return "/" + name.replace("~", "~0").replace("/", "~1")


def cut(message: str) -> str:
    data = message.encode()
    if len(data) <= REASON_PART_MAX:
        return message
    return data[:REASON_PART_MAX].decode("utf-8", "ignore") + "..."


class SchemaCheck:
    def __init__(self) -> None:
        self.passed = 0
        self.total = 0
        self.failure: str | None = None

    def check(self, ok: bool, where: str, what: str, name: str | None = None) -> None:
        self.total += 1
        if ok:
            self.passed += 1
        elif self.failure is None:
            self.failure = cut(where + ("" if name is None else segment(name)) + ": " + what)

    def walk(self, schema: Any, value: Any, where: str) -> None:
        if schema is False:
            self.check(False, where, "is not allowed by the schema")
        if not isinstance(schema, dict):
            return
        self.keywords_any(schema, value, where)
        if kind(value) == "number":
            self.keywords_number(schema, float(value), where)
        elif isinstance(value, str):
            self.keywords_size(schema, len(value), where, "minLength", "maxLength")
        elif isinstance(value, list):
            self.keywords_array(schema, value, where)
        elif isinstance(value, dict):
            self.keywords_object(schema, value, where)

    def keywords_any(self, schema: dict, value: Any, where: str) -> None:
        names = schema.get("type")
        if isinstance(names, str):
            names = [names]
        if isinstance(names, list) and any(isinstance(n, str) for n in names):
            names = [n for n in names if isinstance(n, str)]
            matches = any(n == kind(value) or (n == "integer" and is_whole(value)) for n in names)
            self.check(matches, where, "should be " + " or ".join(names))
        if isinstance(schema.get("enum"), list):
            found = any(same(option, value) for option in schema["enum"])
            self.check(found, where, "is not one of the enum values")
        if "const" in schema:
            self.check(same(schema["const"], value), where, "is not the const value")

    def keywords_number(self, schema: dict, x: float, where: str) -> None:
        for keyword, holds, what in [
            ("minimum", lambda limit: x >= limit, "is less than minimum"),
            ("maximum", lambda limit: x <= limit, "is greater than maximum"),
            ("exclusiveMinimum", lambda limit: x > limit, "is not greater than exclusiveMinimum"),
            ("exclusiveMaximum", lambda limit: x < limit, "is not less than exclusiveMaximum"),
        ]:
            if kind(schema.get(keyword)) == "number":
                self.check(holds(float(schema[keyword])), where, what)

    def keywords_size(self, schema: dict, size: int, where: str, least: str, most: str) -> None:
        noun = "items" if least == "minItems" else ""
        if kind(schema.get(least)) == "number":
            what = f"has fewer items than {least}" if noun else f"is shorter than {least}"
            self.check(size >= float(schema[least]), where, what)
        if kind(schema.get(most)) == "number":
            what = f"has more items than {most}" if noun else f"is longer than {most}"
            self.check(size <= float(schema[most]), where, what)

    def keywords_array(self, schema: dict, value: list, where: str) -> None:
        self.keywords_size(schema, len(value), where, "minItems", "maxItems")
        items = schema.get("items")
        if isinstance(items, dict) or items is False:
            for index, item in enumerate(value):
                self.walk(items, item, f"{where}/{index}")

    def keywords_object(self, schema: dict, value: dict, where: str) -> None:
        if isinstance(schema.get("required"), list):
            for name in schema["required"]:
                if isinstance(name, str):
                    self.check(name in value, where, "is required", name)
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for name, sub in properties.items():
                if name in value:
                    self.walk(sub, value[name], where + segment(name))
        others = schema.get("additionalProperties")
        if others is False or isinstance(others, dict):
            known = properties if isinstance(properties, dict) else {}
            extra = [name for name in value if name not in known]
            if isinstance(others, dict):
                for name in extra:
                    self.walk(others, value[name], where + segment(name))
            else:
                what = "is not allowed (additionalProperties is false)"
                self.check(not extra, where, what, extra[0] if extra else None)


def schemacheck(data: bytes) -> bytes:
    try:
        doc = evaluator_input(data)
    except NotJson:
        return reject(NOT_EVALUATOR_INPUT)
    has_schema, schema = False, None
    contract = doc.get("contract")
    if contract is not None:
        if not isinstance(contract, dict):
            return reject("the contract is not an object")
        schema = contract.get("output_schema")
        if schema is not None and not isinstance(schema, dict | bool):
            return reject("the contract's output_schema is not an object or a boolean")
        has_schema = schema is not None
    checks = SchemaCheck()
    try:
        output = strict_json(doc["output"])
    except NotJson:
        checks.check(False, "output", "is not JSON")
    else:
        checks.check(True, "output", "is not JSON")
        if has_schema:
            checks.walk(schema, output, "output")
        task_input = doc.get("task_input")
        if isinstance(task_input, dict) and "expected" in task_input:
            expected = task_input["expected"]
            what = "is not the expected value"
            if isinstance(expected, dict):
                for name, want in expected.items():
                    got = output.get(name) if isinstance(output, dict) else None
                    found = isinstance(output, dict) and name in output and same(got, want)
                    checks.check(found, "output" + segment(name), what)
            else:
                checks.check(same(output, expected), "output", what)
    reason = f"{checks.passed} of {checks.total} checks passed"
    if checks.failure is not None:
        reason += "; first failure: " + checks.failure
    return verdict(checks.passed == checks.total, checks.passed, checks.total, reason)


def words_of(task_input: Any) -> int | None:
    """The words of a task input by the rule its form names, or None for neither form."""
    if isinstance(task_input, str):
        return len([w for w in WHITE_SPACE.split(task_input) if w])
    if isinstance(task_input, dict) and isinstance(task_input.get("text"), str):
        least: Any = task_input.get("min_length")
        shortest = float(least) if kind(least) == "number" else 1.0
        found = WORD.findall(task_input["text"].encode())
        return len([w for w in found if len(w.decode()) >= shortest])
    return None


def countcheck(data: bytes) -> bytes:
    try:
        doc = evaluator_input(data)
    except NotJson:
        return reject(NOT_EVALUATOR_INPUT)
    want = words_of(doc.get("task_input"))
    if want is None:
        return reject(NOT_A_TEXT)
    try:
        output = strict_json(doc["output"])
    except NotJson:
        return reject(NO_WORDS)
    words: Any = output.get("words") if isinstance(output, dict) else None
    if not is_whole(words) or not 0 <= float(words) <= MAX_WORDS:
        return reject(NO_WORDS)
    got = int(float(words))
    reason = f'the output\'s "words" is {got}'
    if got == want:
        reason += ", the number of words in the input"
    else:
        reason += f", but the input has {want} word{'' if want == 1 else 's'}"
    return verdict(got == want, min(got, want), max(got, want), reason)
