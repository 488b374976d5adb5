"""The input form of a schema: its fields, its layout, and the JSON document back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django import forms

from marketplace.schema_form.build import Builder, TooManyFields
from marketplace.schema_form.nodes import Group, LayoutItem, Leaf, Node
from marketplace.schema_form.values import (
    EMPTY,
    PREFIX,
    count_of,
    enum_key,
    format_number,
    line_of,
    pointer_keys,
)


class InputForm:
    """The fields for one input schema, and the way back to a JSON document."""

    def __init__(self, schema: Any, *, prefix: str = PREFIX) -> None:
        self.schema = schema
        self.prefix = prefix
        try:
            builder = Builder(schema)
            self.root: Node = builder.node(
                schema, name=prefix, pointer="", key=None, required=True, depth=0
            )
        except (TooManyFields, RecursionError):
            self.root = Builder(schema).json_leaf(
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
        """About how many bytes the document's objects take besides their fields (braces,
        and the keys of nested objects), for the quote's input size while someone types;
        each field adds `key_bytes(leaf)` and its value when it is filled in."""
        return sum(
            2 + (_key_bytes(group.pointer) if group.pointer else 0) for group in self.groups()
        )

    def key_bytes(self, leaf: Leaf) -> int:
        """About how many bytes a field adds to the document besides its value: its key,
        a colon and a comma, and a string's quotes."""
        return _key_bytes(leaf.pointer) + (2 if leaf.kind == "string" else 0)


def _key_bytes(pointer: str) -> int:
    keys = pointer_keys(pointer)
    if not keys:
        return 0
    return len(json.dumps(keys[-1], ensure_ascii=False).encode()) + 2


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
    return default is EMPTY or enum_key(value) != enum_key(default)


def _empty_value(leaf: Leaf) -> Any:
    """What a required field left empty sends, or EMPTY when it must be filled in."""
    if leaf.nullable:
        return None
    if leaf.kind == "boolean":
        return False
    if leaf.kind == "string" and not count_of(leaf.schema, "minLength"):
        return ""
    if leaf.kind == "array" and not count_of(leaf.schema, "minItems"):
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
        data[node.name] = enum_key(value)
    elif node.kind == "array":
        if node.item_kind == "enum":
            data[node.name] = [enum_key(v) for v in value]
        else:
            data[node.name] = "\n".join(line_of(v) for v in value)
    elif node.kind in ("number", "integer"):
        data[node.name] = "" if value is None else format_number(value)
    elif node.kind == "json":
        data[node.name] = json.dumps(value)
    else:
        data[node.name] = "" if value is None else value
