"""The input part of the task form: the fields of the chosen agent's input schema, or the
text area when its current version has none (SPEC §19).

The schema's fields (marketplace.schema_form) take the text area's place; the posted
fields are read back into the JSON document the task is submitted with, and the contract
check's errors, located by JSON pointer, are put next to the field they are about.

The form carries which fields it shows (`input_contract`, a hidden input in the input
part): a form posted with another agent's fields (chosen without JavaScript) or with a
contract changed since, is drawn again with the right fields instead of submitted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from marketplace.schema_form import EMPTY, Group, InputForm, LayoutItem, Leaf, parse_json

# How the contract check words a failure (execution.engine.outputs): "input fails the
# schema at /options/code: "ABC" does not match "^[a-z]+$"".
CHECKER_PREFIX = re.compile(r"^input fails the schema(?: at \S*)?: ")


class InputFieldsForm(forms.Form):
    """What the task form adds for its input; the form has an `agent` field."""

    input_agent: Any = None
    input_form: InputForm | None = None
    input_contract = ""
    channels: dict[str, Any]

    def use_agent_input(self) -> None:
        """Show the input fields of the chosen agent (the `agent` field's choice)."""
        self.input_agent = self._chosen_agent()
        binary = None if self.input_agent is None else self.input_agent.current_binary
        schema = None if binary is None else binary.input_schema
        self.input_form = None if schema is None else InputForm(schema)
        self.input_contract = input_contract_token(schema)
        self.group_errors: dict[str, list[str]] = {}
        if self.input_form is not None:
            self._use_input_fields(self.input_form)

    def _chosen_agent(self) -> Any:
        slug = self.data.get("agent") if self.is_bound else self.initial.get("agent")
        if not slug or not isinstance(slug, str):
            return None
        agents = self.fields["agent"].queryset  # type: ignore[attr-defined]
        return agents.select_related("current_binary").filter(slug=slug).first()

    def _use_input_fields(self, input_form: InputForm) -> None:
        """The schema's fields where the text area was, in the same place in the form."""
        fields: dict[str, forms.Field] = {}
        for name, form_field in self.fields.items():
            if name == "input":
                fields.update(input_form.fields)
            else:
                fields[name] = form_field
        self.fields = fields
        for leaf in input_form.leaves():
            if leaf.required and leaf.kind != "boolean":
                leaf.field.widget.attrs["aria-required"] = "true"
            # What the field adds to the input's size besides its value (for the quote).
            leaf.field.widget.attrs["data-json-bytes"] = str(input_form.key_bytes(leaf))

    def clean_input_document(self, cleaned: dict[str, Any]) -> None:
        """The input schema's fields, read into the JSON document: cleaned["input"]."""
        input_form = self.input_form
        if input_form is None:
            return
        names = {leaf.name for leaf in input_form.leaves()}
        failed = frozenset(name for name in self.errors if name in names)
        values = {name: cleaned.get(name, EMPTY) for name in names}
        document, errors = input_form.document(values, failed=failed)
        for name, messages in errors.items():
            self.add_error(name, messages)
        if document is not EMPTY:
            cleaned["input"] = document

    def input_changed(self) -> bool:
        """Whether the input fields that were posted are not the chosen agent's: another
        agent was chosen without JavaScript, or its contract changed since the form was
        drawn. The form is then drawn again with the right fields instead of submitted."""
        if not self.is_bound or self.input_agent is None:
            return False
        return str(self.data.get("input_contract", "")) != self.input_contract

    def with_agent_input(self) -> Any:
        """A new form for the chosen agent's input fields, keeping everything else that
        was typed (and text typed as JSON, when it fits the new fields)."""
        keep = [name for name in self.base_fields if name != "input"]
        initial: dict[str, Any] = {name: self.data.get(name) for name in keep if name in self.data}
        fresh = type(self)(initial=initial, channels=self.channels.values())  # type: ignore[call-arg]
        text = self.data.get("input")
        if fresh.input_form is not None and isinstance(text, str) and text.strip():
            # Not JSON (or not this shape): the fields start from their defaults.
            with contextlib.suppress(ValueError, RecursionError):
                fresh.initial.update(fresh.input_form.form_data(parse_json(text)))
        return fresh

    def add_input_error(self, pointer: str, message: str) -> None:
        """Put the contract check's error at `pointer` (a JSON pointer into the input)
        next to the field that holds that place."""
        if self.input_form is None:
            self.add_error("input", message)
            return
        name = self.input_form.field_for(pointer)
        if pointer:
            # Next to its field, the place it names goes without saying.
            message = CHECKER_PREFIX.sub("", message, count=1) or message
        if name in self.fields:
            self.add_error(name, message)
        else:
            self.group_errors.setdefault(name, []).append(message)

    def input_layout(self) -> list[InputItem]:
        """How the template draws the schema's fields: fieldsets and the fields in them."""
        assert self.input_form is not None
        items = []
        for item in self.input_form.layout():
            node = item.node
            bound = self[node.name] if item.kind == "field" else None
            errors = self.group_errors.get(node.name, []) if isinstance(node, Group) else []
            items.append(InputItem(item, bound, errors))
        return items

    def input_bytes(self) -> int:
        """The input's size for the quote: the text area's; for an input schema's fields,
        the size of the document they hold (about it, while some field can't be read)."""
        if self.input_form is None:
            return len(str(self["input"].value() or "").encode())
        values = {}
        for leaf in self.input_form.leaves():
            try:
                values[leaf.name] = leaf.field.clean(self[leaf.name].value())
            except ValidationError:
                return self._input_bytes_estimate()
        document, errors = self.input_form.document(values)
        if errors:
            return self._input_bytes_estimate()
        return len(json.dumps(document, **STORED_JSON).encode())  # type: ignore[arg-type]

    def _input_bytes_estimate(self) -> int:
        # As the browser measures it while someone types (views/quotes.py, INPUT_BYTES_JS).
        assert self.input_form is not None
        size = self.input_form.skeleton_bytes()
        for leaf in self.input_form.leaves():
            value = self[leaf.name].value()
            if isinstance(value, (list, tuple)):
                size += sum(len(str(v).encode()) + 1 for v in value)
            elif isinstance(value, bool) or leaf.kind == "boolean":
                size += self.input_form.key_bytes(leaf) + (4 if value else 5)
            elif value:
                size += self.input_form.key_bytes(leaf) + len(str(value).encode())
        return size

    def skeleton_bytes(self) -> int:
        return 0 if self.input_form is None else self.input_form.skeleton_bytes()


# How a task stores a JSON input (marketplace.contracts.input_text): its size is the input's.
STORED_JSON = {"ensure_ascii": False, "separators": (",", ":"), "sort_keys": True}


class InputItem:
    """One step of the schema's layout, with its bound field (or its group's errors)."""

    def __init__(self, item: LayoutItem, field: forms.BoundField | None, errors: list[str]):
        self.kind = item.kind
        self.depth = item.depth
        self.node: Leaf | Group = item.node
        self.field = field
        self.errors = errors


def input_contract_token(schema: Any) -> str:
    """Names the input fields a task form shows: "" for the text area, else a digest of
    the input schema (two versions with the same schema show the same fields)."""
    if schema is None:
        return ""
    text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
