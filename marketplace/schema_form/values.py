"""The values of an input form: typed numbers, JSON, pointers and names, labels and hints."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

PREFIX = "input"
# Past these the input is one JSON text area: a form of hundreds of fields helps nobody,
# and the schema is the caller's to write.
MAX_FIELDS = 100
MAX_DEPTH = 6
# A string without a maxLength, or with one above this, gets a text area.
SHORT_STRING = 120
# Numbers typed are bounded before they are converted: "1e999999999" is not a number
# anyone means, and turning it into an int would take the process a very long time.
NUMBER_MAX_CHARS = 60
NUMBER_MAX_EXPONENT = 400
NUMBER_PATTERN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class _Empty:
    """A field left empty (distinct from a JSON null someone typed)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()

# --- pointers and names ------------------------------------------------------------------


def pointer_keys(pointer: str) -> list[str]:
    """'/options/min_length' → ['options', 'min_length'] (RFC 6901 escapes undone)."""
    if not pointer:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]


def pointer_join(pointer: str, key: str) -> str:
    return f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.~-]")


def name_part(key: str) -> str:
    # A field's name is also its element's id (id_<name>): no spaces, nothing to quote.
    return _NAME_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), key)


def field_label(key: str | None, schema: Mapping[str, Any]) -> str:
    title = schema.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()[:200]
    if not key:
        return "Input"
    words = re.sub(r"[_\-]+", " ", key).strip()
    return (words[:1].upper() + words[1:])[:200] if words else key[:200]


def description_of(schema: Mapping[str, Any]) -> str:
    text = schema.get("description")
    return text.strip()[:1000] if isinstance(text, str) else ""


# --- typed values --------------------------------------------------------------------------


def parse_number(text: str, *, integer: bool) -> int | float:
    """A number typed in a field → the JSON number: "3" → 3, "2.5" → 2.5, "1e3" → 1000.0
    (an integer field takes "1e3" and "4.0" as whole numbers)."""
    message = "Enter a whole number." if integer else "Enter a number."
    cleaned = text.strip()
    if len(cleaned) > NUMBER_MAX_CHARS or not NUMBER_PATTERN.fullmatch(cleaned):
        raise ValidationError(message, code="invalid")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValidationError(message, code="invalid") from None
    if value and abs(value.adjusted()) > NUMBER_MAX_EXPONENT:
        raise ValidationError("This number is out of range.", code="out_of_range")
    if integer:
        if value != value.to_integral_value():
            raise ValidationError(message, code="invalid")
        return int(value)
    if value == value.to_integral_value() and not re.search(r"[.eE]", cleaned):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError("This number is out of range.", code="out_of_range")
    return number


def _bound(schema: Mapping[str, Any], key: str) -> Decimal | None:
    value = schema.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return Decimal(str(value))


def _show(number: Decimal) -> str:
    return format(number.normalize(), "f") if number == number.to_integral_value() else str(number)


def _number_bounds(schema: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """[(operator, bound)] from minimum/maximum/exclusive* (drafts 4 and later)."""
    bounds = []
    minimum, maximum = _bound(schema, "minimum"), _bound(schema, "maximum")
    exclusive_min, exclusive_max = (
        _bound(schema, "exclusiveMinimum"),
        _bound(schema, "exclusiveMaximum"),
    )
    if minimum is not None:
        bounds.append((">" if schema.get("exclusiveMinimum") is True else ">=", minimum))
    if exclusive_min is not None:
        bounds.append((">", exclusive_min))
    if maximum is not None:
        bounds.append(("<" if schema.get("exclusiveMaximum") is True else "<=", maximum))
    if exclusive_max is not None:
        bounds.append(("<", exclusive_max))
    return bounds


BOUND_WORDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}


def check_number(value: int | float, schema: Mapping[str, Any]) -> None:
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    for operator, bound in _number_bounds(schema):
        ok = {
            ">=": number >= bound,
            ">": number > bound,
            "<=": number <= bound,
            "<": number < bound,
        }[operator]
        if not ok:
            word = BOUND_WORDS[operator]
            raise ValidationError(f"Enter a number {word} {_show(bound)}.", code="out_of_range")
    step = _bound(schema, "multipleOf")
    if step is not None and step > 0:
        try:
            whole = (number / step) == (number / step).to_integral_value()
        except InvalidOperation:
            whole = True  # too large to tell here; the contract check decides
        if not whole:
            raise ValidationError(f"Enter a multiple of {_show(step)}.", code="multiple_of")


def number_hint(schema: Mapping[str, Any], integer: bool) -> str:
    parts = [f"{BOUND_WORDS[op]} {_show(bound)}" for op, bound in _number_bounds(schema)]
    noun = "A whole number" if integer else "A number"
    step = _bound(schema, "multipleOf")
    if step is not None and step > 0:
        parts.append(f"a multiple of {_show(step)}")
    return f"{noun}, {', '.join(parts)}." if parts else f"{noun}."


def format_number(value: Any) -> str:
    return json.dumps(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN or Infinity, which the contract would refuse anyway."""
    return json.loads(text, parse_constant=_reject_constant)


def count_of(schema: Mapping[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def enum_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def enum_label(value: Any) -> str:
    return value if isinstance(value, str) else enum_key(value)


def line_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
