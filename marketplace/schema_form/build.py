"""Building an input form's fields from a JSON Schema, and what can't be built."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms

from marketplace.schema_form.fields import (
    FORMAT_WIDGETS,
    EnumField,
    EnumListField,
    JSONTextField,
    LinesField,
    NumberField,
    StringField,
)
from marketplace.schema_form.nodes import Group, Leaf, Node
from marketplace.schema_form.values import (
    EMPTY,
    MAX_DEPTH,
    MAX_FIELDS,
    SHORT_STRING,
    count_of,
    description_of,
    enum_key,
    enum_label,
    field_label,
    format_number,
    line_of,
    name_part,
    number_hint,
    pointer_join,
    pointer_keys,
)

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


class _Unrenderable(Exception):
    pass


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


class Builder:
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
        label = field_label(key, schema)
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
                help_text=description_of(schema),
            )
            for child_key in property_order(properties, names, schema.get("propertyOrder")):
                child_schema = properties[child_key]
                if child_schema is False:
                    continue  # a property that may never be there gets no field
                child_default = (
                    default[child_key]
                    if isinstance(default, dict) and child_key in default
                    else EMPTY
                )
                group.children[child_key] = self.node(
                    child_schema,
                    name=f"{name}/{name_part(child_key)}",
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
        description = description_of(schema)
        hints: list[str] = []
        initial: Any = None
        form_field: forms.Field
        if kind == "enum":
            values = _enum_values(schema)
            choices = [(enum_key(v), enum_label(v)) for v in values]
            has_default = default is not EMPTY and enum_key(default) in dict(choices)
            if not required or not has_default:
                choices.insert(0, ("", "Choose…" if required else "—"))
            form_field = EnumField(choices=choices, required=False)
            initial = enum_key(default) if has_default else ""
        elif kind == "boolean":
            form_field = forms.BooleanField(required=False)
            initial = default is True
        elif kind in ("number", "integer"):
            form_field = NumberField(schema=schema, integer=kind == "integer", required=False)
            hints.append(number_hint(schema, kind == "integer"))
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                initial = format_number(default)
        else:
            max_length, min_length = count_of(schema, "maxLength"), count_of(schema, "minLength")
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
        min_items, max_items = count_of(schema, "minItems"), count_of(schema, "maxItems")
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
                choices=[(enum_key(v), enum_label(v)) for v in values],
                required=False,
                widget=forms.CheckboxSelectMultiple,
                min_items=min_items,
                max_items=max_items,
            )
            form_field.initial = [enum_key(v) for v in defaults or []]
        else:
            hints.append("One item per line.")
            if item_kind in ("number", "integer"):
                hints.append(number_hint(item_schema, item_kind == "integer")[:-1] + " each.")
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
                form_field.initial = "\n".join(line_of(v) for v in defaults)
        if min_items:
            hints.append(f"At least {min_items}.")
        if max_items is not None:
            hints.append(f"At most {max_items}.")
        form_field.label = label
        form_field.help_text = " ".join(filter(None, [description_of(schema), *hints]))
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
            label=field_label(key, schema),
            widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
            help_text=" ".join(filter(None, [description_of(schema), "As JSON."])),
            initial=_json_text(default),
        )
        return Leaf(
            name=name,
            pointer=pointer,
            label=field_label(key, schema),
            required=required,
            kind="json",
            field=form_field,
            schema=schema,
            default=default,
        )


def property_order(properties: dict[str, Any], required: Any, order: Any) -> list[str]:
    """The order of an object's fields. PostgreSQL's jsonb keeps no key order, so the order
    a schema was written in is gone once stored: `propertyOrder` (a list of keys) when the
    schema gives one, else the required properties as `required` lists them, then the
    others in alphabetical order; the same on every database."""
    keys: list[str] = []
    for listed in (order, required):
        if isinstance(listed, list):
            keys += [k for k in listed if isinstance(k, str) and k in properties and k not in keys]
    rest = sorted((k for k in properties if k not in keys), key=lambda k: (k.casefold(), k))
    return keys + rest


class TooManyFields(Exception):
    pass


def _json_text(value: Any) -> str | None:
    if value is EMPTY:
        return None
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _fits_line(item: Leaf, value: Any) -> bool:
    if item.kind == "string":
        return (
            isinstance(value, str)
            and "\n" not in value
            and "\r" not in value
            and bool(value.strip())
        )
    return not isinstance(value, str)
