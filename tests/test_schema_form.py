"""The task form's fields from an input schema, and the JSON document back (SPEC §19)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django import forms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.schema_form import (
    EMPTY,
    MAX_DEPTH,
    MAX_FIELDS,
    Group,
    InputForm,
    Leaf,
    parse_number,
)

WORD_COUNT: dict[str, Any] = {
    "type": "object",
    "title": "Word count",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "description": "The text to count the words of."},
        "mode": {"enum": ["words", "lines", "chars"], "default": "words"},
        "top": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "case_sensitive": {"type": "boolean", "title": "Case sensitive"},
        "stopwords": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "weights": {"type": "array", "items": {"type": "number"}},
        "languages": {"type": "array", "items": {"enum": ["en", "fr", "de"]}},
        "options": {
            "type": "object",
            "description": "How words are found.",
            "required": ["min_length"],
            "properties": {
                "min_length": {"type": "integer", "minimum": 1},
                "strip_punctuation": {"type": "boolean", "default": True},
                "separator": {"type": "string", "maxLength": 5, "pattern": "^\\S*$"},
            },
        },
    },
}


def post(input_form: InputForm, data: dict[str, Any]) -> tuple[Any, dict[str, list[str]]]:
    """Clean `data` as the task form does: each field, then the document."""

    class Form(forms.Form):
        pass

    form = Form(data)
    form.fields = dict(input_form.fields)
    form.is_valid()
    errors = {name: [str(m) for m in messages] for name, messages in form.errors.items()}
    values = {name: form.cleaned_data.get(name, EMPTY) for name in input_form.fields}
    document, missing = input_form.document(values, failed=frozenset(errors))
    for name, messages in missing.items():
        errors.setdefault(name, []).extend(messages)
    return document, errors


def leaf(input_form: InputForm, name: str) -> Leaf:
    found = {item.name: item for item in input_form.leaves()}[name]
    return found


# --- fields from schemas -------------------------------------------------------------


def test_each_property_gets_a_field_named_by_its_json_pointer():
    input_form = InputForm(WORD_COUNT)

    # The required first, as `required` lists them, then the others alphabetically.
    assert list(input_form.fields) == [
        "input/text",
        "input/case_sensitive",
        "input/languages",
        "input/mode",
        "input/options/min_length",
        "input/options/separator",
        "input/options/strip_punctuation",
        "input/ratio",
        "input/stopwords",
        "input/top",
        "input/weights",
    ]
    kinds = {item.name: item.kind for item in input_form.leaves()}
    assert kinds["input/text"] == "string" and kinds["input/mode"] == "enum"
    assert kinds["input/top"] == "integer" and kinds["input/ratio"] == "number"
    assert kinds["input/case_sensitive"] == "boolean" and kinds["input/stopwords"] == "array"


def test_the_order_of_the_fields_does_not_depend_on_the_order_of_the_keys():
    # PostgreSQL's jsonb keeps no key order: a stored schema comes back in another one.
    reordered = {**WORD_COUNT, "properties": dict(reversed(WORD_COUNT["properties"].items()))}
    assert list(InputForm(reordered).fields) == list(InputForm(WORD_COUNT).fields)
    ordered = {**WORD_COUNT, "propertyOrder": ["top", "mode", "nope"]}
    assert list(InputForm(ordered).fields)[:4] == [
        "input/top",
        "input/mode",
        "input/text",
        "input/case_sensitive",
    ]


def test_widgets_fit_the_types():
    fields = InputForm(WORD_COUNT).fields

    assert isinstance(fields["input/text"].widget, forms.Textarea)  # no maxLength: long text
    assert isinstance(fields["input/options/separator"].widget, forms.TextInput)
    assert fields["input/options/separator"].widget.attrs["maxlength"] == "5"
    assert isinstance(fields["input/mode"].widget, forms.Select)
    assert isinstance(fields["input/case_sensitive"].widget, forms.CheckboxInput)
    assert isinstance(fields["input/languages"].widget, forms.CheckboxSelectMultiple)
    assert isinstance(fields["input/stopwords"].widget, forms.Textarea)
    # Numbers are typed as text (like credits): a number input would hide the mistake.
    assert fields["input/top"].widget.input_type == "text"
    assert fields["input/top"].widget.attrs["inputmode"] == "numeric"
    assert fields["input/ratio"].widget.attrs["inputmode"] == "decimal"


def test_labels_help_hints_defaults_and_required_marks():
    input_form = InputForm(WORD_COUNT)
    fields = input_form.fields

    assert fields["input/case_sensitive"].label == "Case sensitive"  # the title
    assert fields["input/options/min_length"].label == "Min length"  # the key, readable
    assert fields["input/text"].help_text == "The text to count the words of."
    assert fields["input/top"].help_text == "A whole number, at least 1, at most 50."
    assert fields["input/ratio"].help_text == "A number, more than 0, at most 1."
    assert "Must match the pattern ^\\S*$." in fields["input/options/separator"].help_text
    assert "One item per line." in fields["input/stopwords"].help_text
    assert "At most 3." in fields["input/stopwords"].help_text
    assert fields["input/mode"].initial == '"words"'
    assert fields["input/top"].initial == "10"
    assert fields["input/options/strip_punctuation"].initial is True
    assert leaf(input_form, "input/text").required
    assert not leaf(input_form, "input/mode").required
    assert leaf(input_form, "input/options/min_length").required
    options = input_form.root.children["options"]  # type: ignore[union-attr]
    assert isinstance(options, Group) and not options.required
    assert options.help_text == "How words are found."


def test_an_enum_offers_its_values_and_an_empty_choice_only_when_it_may_be_left_out():
    schema = {
        "type": "object",
        "required": ["size", "level"],
        "properties": {
            "size": {"enum": ["s", "m", "l"], "default": "m"},
            "level": {"enum": [1, 2, None]},
            "colour": {"type": "string", "enum": ["red", "blue"]},
        },
    }
    fields: dict[str, Any] = InputForm(schema).fields

    assert fields["input/size"].choices == [('"s"', "s"), ('"m"', "m"), ('"l"', "l")]
    assert fields["input/level"].choices == [
        ("", "Choose…"),
        ("1", "1"),
        ("2", "2"),
        ("null", "null"),
    ]
    assert fields["input/colour"].choices[0] == ("", "—")
    document, errors = post(
        InputForm(schema), {"input/size": '"l"', "input/level": "null", "input/colour": ""}
    )
    assert errors == {}
    assert document == {"size": "l", "level": None}


def test_a_default_object_fills_the_fields_of_its_properties():
    schema = {
        "type": "object",
        "properties": {
            "options": {
                "type": "object",
                "default": {"depth": 3, "name": "x"},
                "properties": {"depth": {"type": "integer"}, "name": {"type": "string"}},
            }
        },
    }
    fields = InputForm(schema).fields
    assert (fields["input/options/depth"].initial, fields["input/options/name"].initial) == (
        "3",
        "x",
    )


def test_a_schema_that_is_not_an_object_is_one_field():
    for schema, kind in [
        ({"type": "string"}, "string"),
        ({"type": "integer", "minimum": 0}, "integer"),
        ({"enum": ["a", "b"]}, "enum"),
        ({"type": "array", "items": {"type": "string"}}, "array"),
    ]:
        input_form = InputForm(schema)
        assert list(input_form.fields) == ["input"], schema
        assert isinstance(input_form.root, Leaf) and input_form.root.kind == kind
        assert input_form.root.label == "Input"
    document, errors = post(InputForm({"type": "integer"}), {"input": "42"})
    assert (document, errors) == (42, {})


# --- what can't be drawn ---------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "string"}]},
        {"allOf": [{"type": "string"}]},
        {"not": {"type": "string"}},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object"},
        {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
        {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"type": "array"},
        {"type": ["string", "integer"]},
        {},
        True,
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#/$defs/missing"},
        {"enum": []},
    ],
)
def test_a_part_fields_cant_carry_becomes_a_json_text_area(part):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "odd": part}}
    input_form = InputForm(schema)

    odd = leaf(input_form, "input/odd")
    assert odd.kind == "json" and isinstance(odd.field.widget, forms.Textarea)
    assert leaf(input_form, "input/name").kind == "string"
    document, errors = post(input_form, {"input/name": "n", "input/odd": '{"any": [1, "json"]}'})
    assert (document, errors) == ({"name": "n", "odd": {"any": [1, "json"]}}, {})
    _, errors = post(input_form, {"input/odd": "{not json"})
    assert errors["input/odd"][0].startswith("Not valid JSON")


def test_local_refs_are_followed_and_a_cycle_stops_at_a_json_text_area():
    schema = {
        "type": "object",
        "$defs": {
            "name": {"type": "string", "maxLength": 20},
            "node": {
                "type": "object",
                "properties": {"label": {"$ref": "#/$defs/name"}, "next": {"$ref": "#/$defs/node"}},
            },
        },
        "properties": {"first": {"$ref": "#/$defs/node", "title": "First node"}},
    }
    input_form = InputForm(schema)

    first = input_form.root.children["first"]  # type: ignore[union-attr]
    assert isinstance(first, Group) and first.label == "First node"
    assert leaf(input_form, "input/first/label").kind == "string"
    assert leaf(input_form, "input/first/next").kind == "json"  # the cycle
    document, errors = post(
        input_form, {"input/first/label": "a", "input/first/next": '{"label": "b"}'}
    )
    assert (document, errors) == ({"first": {"label": "a", "next": {"label": "b"}}}, {})


def test_a_schema_too_large_or_too_deep_is_one_json_text_area():
    wide = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(MAX_FIELDS + 1)},
    }
    input_form = InputForm(wide)
    assert list(input_form.fields) == ["input"] and leaf(input_form, "input").kind == "json"

    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH + 2):
        deep = {"type": "object", "properties": {"a": deep}}
    input_form = InputForm(deep)
    names = list(input_form.fields)
    assert len(names) == 1 and leaf(input_form, names[0]).kind == "json"
    assert names[0].count("/") == MAX_DEPTH + 1


@pytest.mark.parametrize(
    "schema",
    [
        None,
        [],
        "string",
        5,
        {"type": 7},
        {"properties": []},
        {"required": "x", "properties": {}},
        {"type": "object", "properties": {"a": {"type": "integer", "minimum": "x"}}},
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": -1, "title": 5}}},
        {"type": "array", "items": {"enum": "abc"}},
        {"$ref": "#"},
        {"$ref": "#/properties/a"},
    ],
)
def test_nothing_in_a_schema_makes_it_raise(schema):
    input_form = InputForm(schema)
    assert input_form.fields
    post(input_form, {})


# --- values back --------------------------------------------------------------------------


def test_posted_fields_become_a_typed_document():
    document, errors = post(
        InputForm(WORD_COUNT),
        {
            "input/text": "Hello  world",
            "input/mode": '"lines"',
            "input/top": "5",
            "input/ratio": "0.25",
            "input/case_sensitive": "on",
            "input/stopwords": "the\r\na\r\n\r\n",
            "input/weights": "1\n2.5\n-3e2",
            "input/languages": ["fr", "en"],
            "input/options/min_length": "2",
            "input/options/separator": "-",
        },
    )
    # languages: JSON keys of the choices (a browser posts the option's value).
    assert errors == {
        "input/languages": ["Select a valid choice. fr is not one of the available choices."]
    }
    document, errors = post(
        InputForm(WORD_COUNT),
        {
            "input/text": "Hello  world",
            "input/mode": '"lines"',
            "input/top": "5",
            "input/ratio": "0.25",
            "input/case_sensitive": "on",
            "input/stopwords": "the\r\na\r\n\r\n",
            "input/weights": "1\n2.5\n-3e2",
            "input/languages": ['"fr"', '"en"'],
            "input/options/min_length": "2",
            "input/options/separator": "-",
        },
    )
    assert errors == {}
    assert document == {
        "text": "Hello  world",
        "mode": "lines",
        "top": 5,
        "ratio": 0.25,
        "case_sensitive": True,
        "stopwords": ["the", "a"],
        "weights": [1, 2.5, -300.0],
        "languages": ["en", "fr"],  # in the schema's order
        "options": {"min_length": 2, "strip_punctuation": False, "separator": "-"},
    }
    assert json.dumps(document["weights"]) == "[1, 2.5, -300.0]"


def test_empty_optional_fields_are_left_out_and_unticked_boxes_are_false():
    # As a browser posts the form untouched but for the text: the defaults as drawn.
    untouched = {
        "input/mode": '"words"',
        "input/top": "10",
        "input/options/strip_punctuation": "on",
    }
    document, errors = post(InputForm(WORD_COUNT), {"input/text": "hi", **untouched})

    assert errors == {}
    # The optional object with nothing changed in it is left out, its required field too.
    assert document == {"text": "hi", "mode": "words", "top": 10, "case_sensitive": False}


def test_a_required_field_left_empty_is_an_error_on_that_field():
    schema = {
        "type": "object",
        "required": ["count", "kind", "name", "code"],
        "properties": {
            "count": {"type": "integer"},
            "kind": {"enum": ["a", "b"]},
            "name": {"type": "string"},  # "" is a string: sent as it is
            "code": {"type": "string", "minLength": 1},
        },
    }
    document, errors = post(InputForm(schema), {"input/name": ""})

    assert document is EMPTY
    assert errors == {
        "input/count": ["This field is required."],
        "input/kind": ["This field is required."],
        "input/code": ["This field is required."],
    }
    document, errors = post(
        InputForm(schema), {"input/count": "1", "input/kind": '"a"', "input/code": "x"}
    )
    assert (document, errors) == ({"count": 1, "kind": "a", "name": "", "code": "x"}, {})


def test_an_optional_object_partly_filled_in_asks_for_its_required_fields():
    _, errors = post(InputForm(WORD_COUNT), {"input/text": "hi", "input/options/separator": ";"})

    assert errors == {"input/options/min_length": ["This field is required."]}
    # A box ticked by default and unticked counts as filled in.
    _, errors = post(InputForm(WORD_COUNT), {"input/text": "hi"})
    assert errors == {"input/options/min_length": ["This field is required."]}


def test_a_required_object_is_there_even_when_empty():
    schema = {
        "type": "object",
        "required": ["options"],
        "properties": {
            "options": {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "b": {"type": "boolean"}},
            }
        },
    }
    document, errors = post(InputForm(schema), {})
    assert (document, errors) == ({"options": {"b": False}}, {})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("input/top", "ten", "Enter a whole number."),
        ("input/top", "2.5", "Enter a whole number."),
        ("input/top", "0", "Enter a number at least 1."),
        ("input/top", "51", "Enter a number at most 50."),
        ("input/ratio", "0", "Enter a number more than 0."),
        ("input/ratio", "abc", "Enter a number."),
        ("input/ratio", "NaN", "Enter a number."),
        ("input/ratio", "1e999999", "This number is out of range."),
        ("input/weights", "1\nx", "Line 2: Enter a number."),
        ("input/stopwords", "a\nb\nc\nd", "At most 3 item(s)."),
        ("input/mode", '"sentences"', "Select a valid choice."),
        ("input/options/separator", "toolong", "at most 5 characters"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_an_error_on_its_field(name, value, message):
    document, errors = post(
        InputForm(WORD_COUNT), {"input/text": "hi", "input/options/min_length": "1", name: value}
    )
    assert document is EMPTY
    assert list(errors) == [name]
    assert message in errors[name][0]


def test_numbers_are_read_exactly():
    assert parse_number("3", integer=False) == 3 and isinstance(
        parse_number("3", integer=False), int
    )
    assert parse_number("3.0", integer=False) == 3.0
    assert isinstance(parse_number("3.0", integer=False), float)
    assert parse_number("4.0", integer=True) == 4 and parse_number("1e3", integer=True) == 1000
    assert parse_number(" -0.1 ", integer=False) == -0.1
    assert (
        parse_number("123456789012345678901234567890", integer=True)
        == 123456789012345678901234567890
    )


def test_multiple_of_and_nullable_types():
    schema = {
        "type": "object",
        "required": ["step", "note"],
        "properties": {
            "step": {"type": "number", "multipleOf": 0.5},
            "note": {"type": ["string", "null"], "minLength": 2},
        },
    }
    _, errors = post(InputForm(schema), {"input/step": "0.3"})
    assert errors == {"input/step": ["Enter a multiple of 0.5."]}
    document, errors = post(InputForm(schema), {"input/step": "1.5"})
    assert (document, errors) == ({"step": 1.5, "note": None}, {})


# --- errors from the contract check ------------------------------------------------------------


def test_a_json_pointer_finds_the_field_that_shows_its_error():
    input_form = InputForm(WORD_COUNT)

    assert input_form.field_for("/options/min_length") == "input/options/min_length"
    assert input_form.field_for("/stopwords/2") == "input/stopwords"  # an item: its list
    assert input_form.field_for("/options/unknown") == "input/options"  # the fieldset
    assert input_form.field_for("/options") == "input/options"
    assert input_form.field_for("/nope") == "input"  # the whole input
    assert input_form.field_for("") == "input"


def test_keys_with_slashes_tildes_and_spaces_are_named_safely_and_found_again():
    schema = {
        "type": "object",
        "properties": {
            "a/b": {"type": "string"},
            "c~d": {"type": "string"},
            "my key": {"type": "integer"},
        },
    }
    input_form = InputForm(schema)

    assert list(input_form.fields) == ["input/a%2Fb", "input/c~d", "input/my%20key"]
    assert input_form.field_for("/a~1b") == "input/a%2Fb"
    assert input_form.field_for("/c~0d") == "input/c~d"
    assert input_form.field_for("/my key") == "input/my%20key"
    document, errors = post(input_form, {"input/a%2Fb": "x", "input/my%20key": "3"})
    assert (document, errors) == ({"a/b": "x", "my key": 3}, {})


# --- a round trip, for any document of any schema of the supported shapes -------------------

KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
LINE = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Zl", "Zp", "Cc"]), max_size=12
).filter(lambda s: s.strip() != "")
# Text typed in a field: no NUL (Django's text fields refuse it, as a person can't type it).
TYPED = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=20,
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | FINITE | st.text(max_size=8)


@st.composite
def scalar_case(draw: Any) -> tuple[dict[str, Any], Any]:
    kind = draw(st.sampled_from(["string", "short", "integer", "number", "enum", "boolean"]))
    if kind == "string":
        return {"type": "string"}, draw(TYPED.map(lambda s: s.replace("\r", "")))
    if kind == "short":
        return {"type": "string", "maxLength": 20}, draw(LINE)
    if kind == "integer":
        return {"type": "integer"}, draw(st.integers(-(10**20), 10**20))
    if kind == "number":
        return {"type": "number"}, draw(FINITE | st.integers(-(10**15), 10**15))
    if kind == "boolean":
        return {"type": "boolean"}, True  # an unticked box is false, present or not
    values = draw(st.lists(JSON_SCALARS, min_size=1, max_size=5, unique_by=json.dumps))
    return {"enum": values}, draw(st.sampled_from(values))


@st.composite
def array_case(draw: Any) -> tuple[dict[str, Any], Any]:
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "enum"]))
    if kind == "enum":
        values = draw(st.lists(JSON_SCALARS, min_size=1, max_size=5, unique_by=json.dumps))
        picked = draw(st.sets(st.integers(0, len(values) - 1), min_size=1))
        return {"type": "array", "items": {"enum": values}}, [values[i] for i in sorted(picked)]
    items = {
        "string": LINE,
        "integer": st.integers(-(10**12), 10**12),
        "number": FINITE,
        "boolean": st.booleans(),
    }[kind]
    return {"type": "array", "items": {"type": kind}}, draw(st.lists(items, min_size=1, max_size=4))


@st.composite
def object_case(draw: Any, depth: int = 0) -> tuple[dict[str, Any], Any]:
    keys = draw(st.lists(KEYS, min_size=1, max_size=4, unique=True))
    properties, document, required = {}, {}, []
    for key in keys:
        parts = [scalar_case(), array_case()]
        if depth < 2:
            parts.append(object_case(depth + 1))
        schema, value = draw(st.one_of(parts))
        properties[key] = schema
        # A required property is always there; an optional one sometimes.
        if draw(st.booleans()):
            required.append(key)
            document[key] = value
        elif draw(st.booleans()):
            document[key] = value
        elif schema.get("type") == "boolean":
            document[key] = False  # left unticked: false
    schema = {"type": "object", "properties": properties, "required": required}
    return schema, document


def _defined(document: Any, schema: dict[str, Any]) -> Any:
    """What the form gives back for `document`: optional objects with nothing filled in
    are left out (an unticked box is nothing filled in)."""
    if schema.get("type") != "object":
        return document
    result = {}
    for key, sub in schema["properties"].items():
        if key not in document:
            continue
        value = _defined(document[key], sub)
        if (
            sub.get("type") == "object"
            and key not in schema["required"]
            and not _filled(value, sub)
        ):
            continue
        result[key] = value
    return result


def _filled(value: Any, schema: dict[str, Any]) -> bool:
    for key, sub in schema["properties"].items():
        if key not in value:
            continue
        if sub.get("type") == "boolean" and value[key] is False:
            continue
        if sub.get("type") == "object" and not _filled(value[key], sub):
            continue
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(object_case())
def test_a_document_round_trips_through_the_form(case):
    schema, document = case
    input_form = InputForm(schema)

    back, errors = post(input_form, input_form.form_data(document))

    assert errors == {}
    assert back == _defined(document, schema)
    # Numbers keep their JSON type: 2 stays 2, 2.0 stays 2.0.
    assert json.dumps(back, sort_keys=True) == json.dumps(
        _defined(document, schema), sort_keys=True
    )
