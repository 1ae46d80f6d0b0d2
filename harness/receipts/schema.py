"""The receipt schema, loaded from the installed `schemas` package so writer and verifier share one file."""

import itertools
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_VERSION = "1.0.0"
SCHEMA_FILE = f"receipt.v{SCHEMA_VERSION}.schema.json"
MAX_ERRORS = 1000  # enough to act on; collecting every error of a hostile receipt costs minutes


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The schema document (parsed once per process)."""
    text = resources.files("schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    """A 2020-12 validator over the schema; the schema itself is checked first."""
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(obj: object) -> list[tuple[str, str]]:
    """The first MAX_ERRORS schema violations as (JSON path, message), in a stable order."""
    found = itertools.islice(validator().iter_errors(obj), MAX_ERRORS)
    errors = sorted(found, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [(e.json_path, e.message) for e in errors]
