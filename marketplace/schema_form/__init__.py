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

from marketplace.schema_form.form import InputForm
from marketplace.schema_form.nodes import Group, LayoutItem, Leaf
from marketplace.schema_form.values import (
    EMPTY,
    MAX_DEPTH,
    MAX_FIELDS,
    parse_json,
    parse_number,
    pointer_keys,
)

__all__ = [
    "EMPTY",
    "MAX_DEPTH",
    "MAX_FIELDS",
    "Group",
    "InputForm",
    "LayoutItem",
    "Leaf",
    "parse_json",
    "parse_number",
    "pointer_keys",
]
