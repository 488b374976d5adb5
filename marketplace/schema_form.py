"""Form fields built from an agent version's input schema, and the JSON document back
(SPEC §19, "Forms from the contract").

`InputForm(schema)` turns a JSON Schema into Django form fields:
- strings (a text box, or a text area when long; `enum` → a select; `maxLength` and
  `minLength` checked; `pattern` and `format` shown as hints), numbers and integers
  (bounds checked), booleans (a checkbox: unchecked is false), enums of any JSON values;
- arrays of these: one item per line in a text area, or a checkbox per value for an enum;
- nested objects: a fieldset whose fields are named by their JSON pointer
  (`input/options/min_length`);
- `title` as the label, `description` as help, `default` filled in, `required` marked.

A part of a schema this can't show as fields (`oneOf`, `anyOf`, `allOf`, `not`,
`if`, `patternProperties`, a map of `additionalProperties`, tuples, nested arrays, a
`$ref` cycle or one outside the document, a schema without a type) becomes a JSON text
area for that part; a schema too large or too deep becomes one for the whole input.
Nothing in a schema makes this raise.

`InputForm.document(values)` assembles the fields' cleaned values into the JSON document:
an empty optional field is left out, and so is an optional object whose fields are all
left empty (or as their defaults filled them); a required field left empty is an error
on that field (a required string or array is sent empty when the schema allows it).
Only types, bounds and lengths are checked here; the contract check on submission
(patterns included) has the last word, and `InputForm.field_for(pointer)` says which
field shows its error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
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
# Keywords whose meaning fields can't carry: the part that has them becomes JSON.
UNRENDERABLE = frozenset(
    {
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "prefixItems",
        "dependentSchemas",
        "contains",
        "$dynamicRef",
        "$recursiveRef",
    }
)
SCALARS = ("string", "number", "integer", "boolean")


class _Empty:
    """A field left empty (distinct from a JSON null someone typed)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()


class _Unrenderable(Exception):
    pass


@dataclass(eq=False)
class Leaf:
    """One form field: a value at `pointer` in the document."""

    name: str
    pointer: str
    label: str
    required: bool
    kind: str  # string, number, integer, boolean, enum, array, json
    field: forms.Field
    schema: dict[str, Any]
    nullable: bool = False
    item_kind: str | None = None  # arrays: the kind of their items
    default: Any = EMPTY

    @property
    def is_checkbox(self) -> bool:
        return self.kind == "boolean"

    @property
    def is_checkbox_list(self) -> bool:
        return self.kind == "array" and self.item_kind == "enum"


@dataclass(eq=False)
class Group:
    """A nested object: a fieldset of its properties' fields."""

    name: str
    pointer: str
    label: str
    required: bool
    help_text: str
    children: dict[str, Leaf | Group] = field(default_factory=dict)


Node = Leaf | Group


@dataclass(frozen=True)
class LayoutItem:
    """One step of drawing the form: open a group, a field, or close a group."""

    kind: str  # open, field, close
    node: Node
    depth: int


# --- pointers and names ------------------------------------------------------------------


def pointer_keys(pointer: str) -> list[str]:
    """'/options/min_length' → ['options', 'min_length'] (RFC 6901 escapes undone)."""
    if not pointer:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]


def pointer_join(pointer: str, key: str) -> str:
    return f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.~-]")


def _name_part(key: str) -> str:
    # A field's name is also its element's id (id_<name>): no spaces, nothing to quote.
    return _NAME_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), key)


def _label(key: str | None, schema: Mapping[str, Any]) -> str:
    title = schema.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()[:200]
    if not key:
        return "Input"
    words = re.sub(r"[_\-]+", " ", key).strip()
    return (words[:1].upper() + words[1:])[:200] if words else key[:200]


def _description(schema: Mapping[str, Any]) -> str:
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


def _number_hint(schema: Mapping[str, Any], integer: bool) -> str:
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


# --- Django fields ---------------------------------------------------------------------


class DateInput(forms.TextInput):
    # The browser's own date picker, which sends YYYY-MM-DD: JSON Schema's "date".
    input_type = "date"


FORMAT_WIDGETS: dict[str, type[forms.Widget]] = {
    "date": DateInput,
    "email": forms.EmailInput,
    "uri": forms.URLInput,
}


class NumberField(forms.Field):
    """A JSON number (or integer) typed as text, like the credit fields: a number input
    would round, and would show an empty value for "abc" instead of the mistake."""

    widget = forms.TextInput

    def __init__(self, *, schema: Mapping[str, Any], integer: bool, **kwargs: Any) -> None:
        self.schema = schema
        self.integer = integer
        super().__init__(**kwargs)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        attrs = super().widget_attrs(widget)
        attrs.update(
            {
                "inputmode": "numeric" if self.integer else "decimal",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        )
        return attrs

    def to_python(self, value: Any) -> Any:
        text = "" if value is None else str(value).strip()
        if not text:
            return EMPTY
        number = parse_number(text, integer=self.integer)
        check_number(number, self.schema)
        return number


class LinesField(forms.CharField):
    """An array of scalars, one item per line (blank lines skipped)."""

    def __init__(self, *, item: Leaf, min_items: int | None, max_items: int | None, **kwargs: Any):
        self.item = item
        self.min_items = min_items
        self.max_items = max_items
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        text = "" if value is None else str(value)
        lines = [line.rstrip("\r") for line in text.split("\n")]
        lines = [line for line in lines if line.strip()]
        if not lines:
            return EMPTY
        items = []
        for number, line in enumerate(lines, 1):
            try:
                items.append(_item_value(self.item, line))
            except ValidationError as exc:
                raise ValidationError(
                    f"Line {number}: {' '.join(exc.messages)}", code="invalid"
                ) from None
        _check_items(items, self.min_items, self.max_items)
        return items


class EnumListField(forms.MultipleChoiceField):
    """An array of enum values: a checkbox for each."""

    def __init__(self, *, min_items: int | None, max_items: int | None, **kwargs: Any):
        self.min_items = min_items
        self.max_items = max_items
        super().__init__(**kwargs)

    def clean(self, value: Any) -> Any:
        chosen = super().clean(value)
        if not chosen:
            return EMPTY
        # In the schema's order, whatever order the browser sent them in.
        order = [key for key, _ in self.choices]  # type: ignore[misc,union-attr]
        items = [parse_json(key) for key in sorted(set(chosen), key=order.index)]
        _check_items(items, self.min_items, self.max_items)
        return items


class EnumField(forms.ChoiceField):
    def clean(self, value: Any) -> Any:
        chosen = super().clean(value)
        return EMPTY if chosen in ("", None) else parse_json(chosen)


class StringField(forms.CharField):
    """Text as typed (not stripped: the agent gets what was written)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> Any:
        text = "" if value is None else str(value).replace("\r\n", "\n")
        if not text:
            return EMPTY
        return super().clean(text)


class JSONTextField(forms.CharField):
    """The fallback: this part of the input typed as JSON."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> Any:
        text = "" if value is None else str(value)
        if not text.strip():
            return EMPTY
        try:
            return parse_json(text)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}", code="invalid_json") from None


def _check_items(items: list[Any], min_items: int | None, max_items: int | None) -> None:
    if min_items is not None and len(items) < min_items:
        raise ValidationError(f"At least {min_items} item(s).", code="min_items")
    if max_items is not None and len(items) > max_items:
        raise ValidationError(f"At most {max_items} item(s).", code="max_items")


def _item_value(item: Leaf, text: str) -> Any:
    if item.kind in ("number", "integer"):
        number = parse_number(text, integer=item.kind == "integer")
        check_number(number, item.schema)
        return number
    if item.kind == "boolean":
        word = text.strip().lower()
        if word not in ("true", "false"):
            raise ValidationError("Enter true or false.", code="invalid")
        return word == "true"
    return text


def _count(schema: Mapping[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# --- building ----------------------------------------------------------------------------


def _kind(schema: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(the kind of field for this schema or None, whether null is allowed too)."""
    if "enum" in schema or "const" in schema:
        return "enum", False
    declared = schema.get("type")
    nullable = False
    if isinstance(declared, list):
        types = [t for t in declared if t != "null"]
        nullable = len(types) < len(declared)
        if set(types) == {"integer", "number"}:
            types = ["number"]
        declared = types[0] if len(types) == 1 else None
    if declared is None:
        if "properties" in schema:
            declared = "object"
        elif "items" in schema:
            declared = "array"
    return (declared if isinstance(declared, str) else None), nullable


def _enum_values(schema: Mapping[str, Any]) -> list[Any]:
    if "const" in schema:
        return [schema["const"]]
    values = schema.get("enum")
    if not isinstance(values, list) or not values:
        raise _Unrenderable
    return values


def _enum_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _enum_label(value: Any) -> str:
    return value if isinstance(value, str) else _enum_key(value)


class _Builder:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.fields = 0

    def resolve(self, schema: Any, refs: tuple[str, ...]) -> tuple[dict[str, Any], tuple]:
        """Follow local `$ref`s; a cycle or a reference outside the document can't be drawn."""
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#") or ref in refs:
                raise _Unrenderable
            refs = (*refs, ref)
            target: Any = self.root
            for key in pointer_keys(ref[1:]):
                if isinstance(target, dict) and key in target:
                    target = target[key]
                elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                    target = target[int(key)]
                else:
                    raise _Unrenderable
            # Words beside the $ref (a title, a default) describe this use of it.
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if set(siblings) - {"title", "description", "default", "examples", "$comment"}:
                raise _Unrenderable
            schema = {**target, **siblings} if isinstance(target, dict) else target
        if not isinstance(schema, dict):
            raise _Unrenderable
        if UNRENDERABLE & schema.keys():
            raise _Unrenderable
        return schema, refs

    def node(
        self,
        schema: Any,
        *,
        name: str,
        pointer: str,
        key: str | None,
        required: bool,
        depth: int,
        refs: tuple[str, ...] = (),
        inherited: Any = EMPTY,
    ) -> Node:
        try:
            if depth > MAX_DEPTH:
                raise _Unrenderable
            resolved, refs = self.resolve(schema, refs)
            return self._node(resolved, name, pointer, key, required, depth, refs, inherited)
        except _Unrenderable:
            return self.json_leaf(
                schema if isinstance(schema, dict) else {},
                name=name,
                pointer=pointer,
                key=key,
                required=required,
                inherited=inherited,
            )

    def _node(
        self,
        schema: dict[str, Any],
        name: str,
        pointer: str,
        key: str | None,
        required: bool,
        depth: int,
        refs: tuple[str, ...],
        inherited: Any,
    ) -> Node:
        kind, nullable = _kind(schema)
        default = schema.get("default", inherited)
        label = _label(key, schema)
        if kind == "object":
            properties = schema.get("properties")
            if not isinstance(properties, dict) or not properties:
                raise _Unrenderable  # a map, or any object: only JSON can say what's in it
            names = schema.get("required")
            required_keys = set(names) if isinstance(names, list) else set()
            group = Group(
                name=name,
                pointer=pointer,
                label=label,
                required=required,
                help_text=_description(schema),
            )
            for child_key, child_schema in properties.items():
                if child_schema is False:
                    continue  # a property that may never be there gets no field
                child_default = (
                    default[child_key]
                    if isinstance(default, dict) and child_key in default
                    else EMPTY
                )
                group.children[child_key] = self.node(
                    child_schema,
                    name=f"{name}/{_name_part(child_key)}",
                    pointer=pointer_join(pointer, child_key),
                    key=child_key,
                    required=child_key in required_keys,
                    depth=depth + 1,
                    refs=refs,
                    inherited=child_default,
                )
            return group
        if kind == "array":
            return self.array_leaf(schema, name, pointer, label, required, refs, default)
        if kind in SCALARS or kind == "enum":
            leaf = self.scalar_leaf(schema, kind, name, pointer, label, required, default)
            leaf.nullable = nullable
            return leaf
        raise _Unrenderable

    def count(self) -> None:
        self.fields += 1
        if self.fields > MAX_FIELDS:
            raise TooManyFields

    def scalar_leaf(
        self,
        schema: dict[str, Any],
        kind: str,
        name: str,
        pointer: str,
        label: str,
        required: bool,
        default: Any,
    ) -> Leaf:
        self.count()
        description = _description(schema)
        hints: list[str] = []
        initial: Any = None
        form_field: forms.Field
        if kind == "enum":
            values = _enum_values(schema)
            choices = [(_enum_key(v), _enum_label(v)) for v in values]
            has_default = default is not EMPTY and _enum_key(default) in dict(choices)
            if not required or not has_default:
                choices.insert(0, ("", "Choose…" if required else "—"))
            form_field = EnumField(choices=choices, required=False)
            initial = _enum_key(default) if has_default else ""
        elif kind == "boolean":
            form_field = forms.BooleanField(required=False)
            initial = default is True
        elif kind in ("number", "integer"):
            form_field = NumberField(schema=schema, integer=kind == "integer", required=False)
            hints.append(_number_hint(schema, kind == "integer"))
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                initial = format_number(default)
        else:
            max_length, min_length = _count(schema, "maxLength"), _count(schema, "minLength")
            short = max_length is not None and max_length <= SHORT_STRING
            attrs: dict[str, Any] = {"spellcheck": "false"} if not short else {}
            widget: forms.Widget
            format_widget = FORMAT_WIDGETS.get(str(schema.get("format")))
            if format_widget is not None:
                widget = format_widget()
            elif short:
                widget = forms.TextInput()
            else:
                widget = forms.Textarea(attrs={"rows": 3, **attrs})
            form_field = StringField(
                required=False, max_length=max_length, min_length=min_length, widget=widget
            )
            if isinstance(schema.get("format"), str):
                hints.append(f"Format: {schema['format']}.")
            if isinstance(schema.get("pattern"), str):
                hints.append(f"Must match the pattern {schema['pattern']}.")
            if isinstance(default, str):
                initial = default
        examples = schema.get("examples")
        if isinstance(examples, list) and examples and kind in ("string", "number", "integer"):
            example = examples[0]
            if isinstance(example, (str, int, float)) and not isinstance(example, bool):
                form_field.widget.attrs.setdefault("placeholder", str(example)[:100])
        form_field.label = label
        form_field.help_text = " ".join(filter(None, [description, *hints]))
        form_field.initial = initial
        return Leaf(
            name=name,
            pointer=pointer,
            label=label,
            required=required,
            kind=kind,
            field=form_field,
            schema=schema,
            default=default,
        )

    def array_leaf(
        self,
        schema: dict[str, Any],
        name: str,
        pointer: str,
        label: str,
        required: bool,
        refs: tuple[str, ...],
        default: Any,
    ) -> Leaf:
        items = schema.get("items")
        item_schema, _ = self.resolve(items, refs)
        item_kind, item_nullable = _kind(item_schema)
        if item_kind not in (*SCALARS, "enum") or item_nullable:
            raise _Unrenderable
        self.count()
        min_items, max_items = _count(schema, "minItems"), _count(schema, "maxItems")
        item = Leaf(
            name=name,
            pointer=pointer,
            label=label,
            required=True,
            kind=item_kind,
            field=forms.Field(),
            schema=item_schema,
        )
        defaults = default if isinstance(default, list) else None
        hints = []
        form_field: forms.Field
        if item_kind == "enum":
            values = _enum_values(item_schema)
            form_field = EnumListField(
                choices=[(_enum_key(v), _enum_label(v)) for v in values],
                required=False,
                widget=forms.CheckboxSelectMultiple,
                min_items=min_items,
                max_items=max_items,
            )
            form_field.initial = [_enum_key(v) for v in defaults or []]
        else:
            hints.append("One item per line.")
            if item_kind in ("number", "integer"):
                hints.append(_number_hint(item_schema, item_kind == "integer")[:-1] + " each.")
            if item_kind == "boolean":
                hints.append("Each true or false.")
            form_field = LinesField(
                item=item,
                min_items=min_items,
                max_items=max_items,
                required=False,
                widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
            )
            if defaults is not None and all(_fits_line(item, v) for v in defaults):
                form_field.initial = "\n".join(_line(v) for v in defaults)
        if min_items:
            hints.append(f"At least {min_items}.")
        if max_items is not None:
            hints.append(f"At most {max_items}.")
        form_field.label = label
        form_field.help_text = " ".join(filter(None, [_description(schema), *hints]))
        return Leaf(
            name=name,
            pointer=pointer,
            label=label,
            required=required,
            kind="array",
            field=form_field,
            schema=schema,
            item_kind=item_kind,
            default=default,
        )

    def json_leaf(
        self,
        schema: dict[str, Any],
        *,
        name: str,
        pointer: str,
        key: str | None,
        required: bool,
        inherited: Any,
    ) -> Leaf:
        self.count()
        default = schema.get("default", inherited)
        form_field = JSONTextField(
            required=False,
            label=_label(key, schema),
            widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
            help_text=" ".join(filter(None, [_description(schema), "As JSON."])),
            initial=_json_text(default),
        )
        return Leaf(
            name=name,
            pointer=pointer,
            label=_label(key, schema),
            required=required,
            kind="json",
            field=form_field,
            schema=schema,
            default=default,
        )


class TooManyFields(Exception):
    pass


def _json_text(value: Any) -> str | None:
    if value is EMPTY:
        return None
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _line(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _fits_line(item: Leaf, value: Any) -> bool:
    if item.kind == "string":
        return (
            isinstance(value, str)
            and "\n" not in value
            and "\r" not in value
            and bool(value.strip())
        )
    return not isinstance(value, str)


# --- the form ------------------------------------------------------------------------------


class InputForm:
    """The fields for one input schema, and the way back to a JSON document."""

    def __init__(self, schema: Any, *, prefix: str = PREFIX) -> None:
        self.schema = schema
        self.prefix = prefix
        try:
            builder = _Builder(schema)
            self.root: Node = builder.node(
                schema, name=prefix, pointer="", key=None, required=True, depth=0
            )
        except (TooManyFields, RecursionError):
            self.root = _Builder(schema).json_leaf(
                schema if isinstance(schema, dict) else {},
                name=prefix,
                pointer="",
                key=None,
                required=True,
                inherited=EMPTY,
            )
        if isinstance(self.root, Leaf) and self.root.kind != "json":
            self.root.field.label = "Input"
            self.root.label = "Input"

    # fields and layout

    def leaves(self) -> Iterator[Leaf]:
        yield from _leaves(self.root)

    @property
    def fields(self) -> dict[str, forms.Field]:
        return {leaf.name: leaf.field for leaf in self.leaves()}

    def layout(self) -> list[LayoutItem]:
        items: list[LayoutItem] = []
        _layout(self.root, 0, items)
        return items

    def groups(self) -> Iterator[Group]:
        yield from _groups(self.root)

    def field_for(self, pointer: str) -> str:
        """The name of the field (or group) that shows an error at `pointer` in the input:
        the deepest one the pointer passes through (an array's field for its items)."""
        node = self.root
        for key in pointer_keys(pointer):
            if not isinstance(node, Group) or key not in node.children:
                break
            node = node.children[key]
        return node.name

    # values

    def document(
        self, values: Mapping[str, Any], *, failed: frozenset[str] = frozenset()
    ) -> tuple[Any, dict[str, list[str]]]:
        """The JSON document from the fields' cleaned values, and errors by field name.

        `failed`: fields that already refused their value; they count as filled in, and
        no document comes back while there are any.
        """
        errors: dict[str, list[str]] = {}
        value, _ = _assemble(self.root, values, failed, errors, present=True)
        if errors or failed:
            return EMPTY, errors
        return ({} if value is EMPTY else value), errors

    def form_data(self, document: Any) -> dict[str, Any]:
        """What a browser would post for `document` (the inverse of document()): text for
        text fields, "on" for a ticked box, a list for checkbox lists."""
        data: dict[str, Any] = {}
        _fill(self.root, document, data)
        return data

    def skeleton_bytes(self) -> int:
        """About how many bytes the document has besides the values typed (keys, quotes,
        braces), for the quote's input size while someone types."""
        return len(json.dumps(_skeleton(self.root), ensure_ascii=False).encode())


def _leaves(node: Node) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    else:
        for child in node.children.values():
            yield from _leaves(child)


def _groups(node: Node) -> Iterator[Group]:
    if isinstance(node, Group):
        yield node
        for child in node.children.values():
            yield from _groups(child)


def _layout(node: Node, depth: int, items: list[LayoutItem]) -> None:
    if isinstance(node, Leaf):
        items.append(LayoutItem("field", node, depth))
        return
    items.append(LayoutItem("open", node, depth))
    for child in node.children.values():
        _layout(child, depth + 1, items)
    items.append(LayoutItem("close", node, depth))


def _provided(leaf: Leaf, value: Any) -> bool:
    """Whether a field was filled in, for leaving out an optional object: a field left
    empty, or holding the default it was drawn with (an unticked box: false), was not."""
    if value is EMPTY:
        return False
    default = False if leaf.kind == "boolean" and leaf.default is EMPTY else leaf.default
    return default is EMPTY or _enum_key(value) != _enum_key(default)


def _empty_value(leaf: Leaf) -> Any:
    """What a required field left empty sends, or EMPTY when it must be filled in."""
    if leaf.nullable:
        return None
    if leaf.kind == "boolean":
        return False
    if leaf.kind == "string" and not _count(leaf.schema, "minLength"):
        return ""
    if leaf.kind == "array" and not _count(leaf.schema, "minItems"):
        return []
    return EMPTY


def _assemble(
    node: Node,
    values: Mapping[str, Any],
    failed: frozenset[str],
    errors: dict[str, list[str]],
    *,
    present: bool,
) -> tuple[Any, bool]:
    """(the value, whether anything was filled in). `present`: the parent is in the
    document, so a required field left empty is an error."""
    if isinstance(node, Leaf):
        if node.name in failed:
            return EMPTY, True
        value = values.get(node.name, EMPTY)
        if node.kind == "boolean":
            value = bool(value) if value is not EMPTY else False
        provided = _provided(node, value)
        if value is EMPTY and node.required and present:
            value = _empty_value(node)
            if value is EMPTY:
                errors.setdefault(node.name, []).append("This field is required.")
        return value, provided

    # An optional object none of whose fields was filled in (or changed from its default)
    # is left out, and its required fields are not asked for; otherwise it is there with
    # everything its fields hold.
    probe: dict[str, list[str]] = {}
    results = {
        key: _assemble(child, values, failed, probe, present=False)
        for key, child in node.children.items()
    }
    anything = any(provided for _, provided in results.values())
    if not anything and not node.required:
        return EMPTY, False
    if not present and not anything:
        return EMPTY, False
    document = {}
    for key, child in node.children.items():
        value, _ = _assemble(child, values, failed, errors, present=True)
        if value is not EMPTY:
            document[key] = value
    return document, anything


def _fill(node: Node, value: Any, data: dict[str, Any]) -> None:
    if isinstance(node, Group):
        if not isinstance(value, dict):
            return
        for key, child in node.children.items():
            if key in value:
                _fill(child, value[key], data)
        return
    if node.kind == "boolean":
        if value is True:
            data[node.name] = "on"
    elif node.kind == "enum":
        data[node.name] = _enum_key(value)
    elif node.kind == "array":
        if node.item_kind == "enum":
            data[node.name] = [_enum_key(v) for v in value]
        else:
            data[node.name] = "\n".join(_line(v) for v in value)
    elif node.kind in ("number", "integer"):
        data[node.name] = "" if value is None else format_number(value)
    elif node.kind == "json":
        data[node.name] = json.dumps(value)
    else:
        data[node.name] = "" if value is None else value


def _skeleton(node: Node) -> Any:
    if isinstance(node, Group):
        return {key: _skeleton(child) for key, child in node.children.items()}
    return "" if node.kind == "string" else None
