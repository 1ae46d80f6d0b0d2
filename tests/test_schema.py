"""The receipt schema: package data, a valid 2020-12 schema, closed objects, the seed core fields required."""

import copy

import pytest
from jsonschema import Draft202012Validator

from harness.receipts.schema import SCHEMA_VERSION, load_schema, schema_errors
from tests.receipt_factory import make_receipt

SEED_CORE = (
    "schema_version",
    "timestamp",
    "compute_path",
    "backend",
    "deterministic",
    "tokens_requested",
    "tokens_generated",
    "tokens_per_second",
    "kernels",
    "environment",
    "model",
)


def _object_schemas(node: object, path: str = "$"):
    """Every sub-schema that declares properties (an object shape), with its location; the conditions of
    `if` keywords are predicates on a receipt, not shapes, and are left out."""
    if isinstance(node, dict):
        if "properties" in node:
            yield path, node
        for key, value in node.items():
            if key != "if":
                yield from _object_schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _object_schemas(value, f"{path}/{i}")


def test_schema_is_package_data_and_valid():
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_every_object_rejects_unknown_keys():
    shapes = list(_object_schemas(load_schema()))
    assert len(shapes) > 20
    open_ = [path for path, node in shapes if node.get("additionalProperties") is not False]
    assert open_ == []


def test_seed_core_fields_are_required():
    """Always, or (the benchmark's fields) whenever the receipt has a benchmark phase."""
    schema = load_schema()
    required = set(schema["required"])
    (with_benchmark,) = [
        c for c in schema["allOf"] if c["if"]["properties"]["phases"]["required"] == ["benchmark"]
    ]
    assert set(SEED_CORE) <= required | set(with_benchmark["then"]["required"])
    for field in set(SEED_CORE) - required:
        receipt = make_receipt()
        del receipt[field]
        assert schema_errors(receipt) == [("$", f"'{field}' is a required property")]


def test_a_receipt_without_a_benchmark_phase_needs_no_benchmark_fields():
    receipt = make_receipt()
    timing = receipt["phases"]["timing"]
    receipt["phases"] = {"timing": timing}
    for field in (
        "deterministic",
        "tokens_requested",
        "tokens_generated",
        "tokens_per_second",
        "output_digest",
    ):
        del receipt[field]
    assert schema_errors(receipt) == []
    del receipt["prompt"]  # a timing phase prefilled a prompt: it stays required
    assert schema_errors(receipt) == [("$", "'prompt' is a required property")]


def test_factory_receipt_is_valid():
    assert schema_errors(make_receipt()) == []


@pytest.mark.parametrize("field", ["tokens_per_second", "kernels", "model", "content_digest"])
def test_removed_required_field_is_rejected(field):
    receipt = make_receipt()
    del receipt[field]
    errors = schema_errors(receipt)
    assert [(p, m) for p, m in errors] == [("$", f"'{field}' is a required property")]


@pytest.mark.parametrize(
    "where",
    [
        (),
        ("model",),
        ("host",),
        ("phases",),
        ("phases", "benchmark"),
        ("phases", "benchmark", "summary"),
        ("phases", "timing", "percentiles", "total"),
    ],
)
def test_unknown_key_is_rejected_at_every_level(where):
    receipt = make_receipt()
    node = receipt
    for key in where:
        node = node[key]
    node["surprise"] = 1
    errors = schema_errors(receipt)
    assert len(errors) == 1
    assert "surprise" in errors[0][1]


def test_unknown_key_inside_array_items_is_rejected():
    receipt = make_receipt()
    receipt["phases"]["benchmark"]["repetitions"][1]["extra"] = True
    assert len(schema_errors(receipt)) == 1


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("schema_version",), "1.0.1"),
        (("compute_path",), "fast"),
        (("timestamp",), "2025-01-01 12:00:00"),
        (("timestamp",), "2025-01-01T12:00:00"),
        (("model", "sha256"), "AB" * 32),
        (("tokens_generated",), -1),
        (("tokens_generated",), 1.5),
        (("deterministic",), "yes"),
        (("kernel_counts", "rmsnorm", "calls"), -3),
        (("environment", "variables"), {"HOME": "/root"}),
        (("sampling", "top_p"), 0),
    ],
)
def test_bad_values_are_rejected(path, value):
    receipt = copy.deepcopy(make_receipt())
    node = receipt
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(receipt), f"{path} = {value!r} should be rejected"


def test_non_object_is_rejected():
    assert schema_errors([1, 2]) == [("$", "[1, 2] is not of type 'object'")]
