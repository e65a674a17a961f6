"""The JSON Schemas of docs/schemas/, for tests that check what the code emits against what it publishes.

Example::

    assert_valid("verdict", json.loads(value))
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
NAMES = ("verdict", "dead-letter", "month", "exemption")


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of ``docs/schemas/<name>.schema.json``, checking formats (date, date-time) too."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, instance: Any) -> list[str]:
    """What is wrong with ``instance`` under the schema, one line each (empty: valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator(name).iter_errors(instance)
    ]


def assert_valid(name: str, instance: Any) -> None:
    found = problems(name, instance)
    assert not found, f"not a valid {name}: {found}\n{json.dumps(instance)[:2000]}"
