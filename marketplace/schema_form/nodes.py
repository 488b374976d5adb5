"""The parts of an input form: a field (Leaf) or a fieldset of them (Group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms

from marketplace.schema_form.values import EMPTY


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
