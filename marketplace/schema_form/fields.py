"""The Django fields of an input form: each cleans to a JSON value, or EMPTY."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from marketplace.schema_form.nodes import Leaf
from marketplace.schema_form.values import EMPTY, check_number, parse_json, parse_number

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
