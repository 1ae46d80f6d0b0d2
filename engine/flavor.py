"""Tensor byte sizes per layout, and telling the three type-36 (I2_S) flavors apart by size.

A tensor's found size is the gap from its offset to the next tensor's offset (file end for the last).
"Exact" means `0 <= found - expected < alignment` (the difference is padding). The file's I2_S flavor is the
one most type-36 tensors match exactly, and every type-36 tensor is judged against it, so an exact size of one
flavor is never taken for a near miss of another (a microsoft I2_S tensor 32 bytes short has QK256's exact
size, yet in a file of I2_S tensors it is an I2_S tensor with a -32 byte deviation). A microsoft I2_S tensor
too short to hold its float32 scale (at byte n/4) is invalid in every mode: padding it would give scale 0.0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.constants import (
    FORMAT_BITNET32,
    FORMAT_I2S,
    FORMAT_QK256,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
    GGMLType,
)

FLAVOR_F32 = "f32"
FLAVOR_F16 = "f16"
FLAVOR_BF16 = "bf16"
I2S_FLAVORS = (FORMAT_I2S, FORMAT_QK256, FORMAT_BITNET32)
TERNARY_FLAVORS = (*I2S_FLAVORS, FORMAT_TQ2_0, FORMAT_TQ1_0)
FIXED_FLAVOR: dict[int, str] = {
    GGMLType.F32: FLAVOR_F32,
    GGMLType.F16: FLAVOR_F16,
    GGMLType.BF16: FLAVOR_BF16,
    GGMLType.TQ2_0: FORMAT_TQ2_0,
    GGMLType.TQ1_0: FORMAT_TQ1_0,
}
STRICT_REMEDY = "re-export the model, or drop --strict-loader / BITNET_STRICT_MODE to accept near misses"
LOOSE_REMEDY = "re-export or re-download the model (the size is beyond the near-miss tolerance)"
SCALE_REMEDY = "re-export the model keeping every I2_S tensor's 32-byte scale tail"
I2S_SCALE_BYTES = 4  # the float32 scale at byte n/4 of a microsoft I2_S tensor

STATUS_OK = "ok"
STATUS_NEAR = "near"
STATUS_INVALID = "invalid"


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns of a tensor in numpy order; a 1-D tensor is one row, higher dims fold into rows."""
    cols = shape[-1]
    rows = 1
    for dim in shape[:-1]:
        rows *= dim
    return rows, cols


def expected_nbytes(flavor: str, shape: tuple[int, ...]) -> int | None:
    """Bytes a tensor of this shape takes in this layout, or None when the layout cannot hold the shape."""
    rows, cols = rows_cols(shape)
    n = rows * cols
    if flavor == FLAVOR_F32:
        return 4 * n
    if flavor in (FLAVOR_F16, FLAVOR_BF16):
        return 2 * n
    if flavor in (FORMAT_TQ2_0, FORMAT_TQ1_0):
        if cols % 256:
            return None
        return rows * (cols // 256) * (66 if flavor == FORMAT_TQ2_0 else 54)
    if flavor == FORMAT_I2S:
        return n // 4 + 32
    if flavor == FORMAT_QK256:
        return rows * -(-cols // 256) * 64
    if flavor == FORMAT_BITNET32:
        return -(-n // 32) * 10
    raise ValueError(f"unknown flavor {flavor!r}")


def i2s_scale_offset(shape: tuple[int, ...]) -> int:
    """Byte offset of a microsoft I2_S tensor's float32 scale: n/4, right after the 2-bit codes."""
    rows, cols = rows_cols(shape)
    return rows * cols // 4


def fixed_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int | None:
    """Exact size of a fixed-layout type (everything but type 36); None for type 36 or an impossible shape."""
    flavor = FIXED_FLAVOR.get(ggml_type)
    return None if flavor is None else expected_nbytes(flavor, shape)


def min_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """The fewest bytes an acceptable tensor of this type and shape can take (type 36: near misses too)."""
    if ggml_type != GGMLType.I2_S:
        return fixed_nbytes(ggml_type, shape) or 0
    smallest = min(expected_nbytes(flavor, shape) or 0 for flavor in I2S_FLAVORS)
    return max(smallest - tolerance(smallest), 0)


def tolerance(expected: int) -> int:
    """Near-miss tolerance in bytes: max(0.1 % of expected, 8); a whole number since sizes are."""
    return max(expected // 1000, 8)


def is_exact(found: int, expected: int | None, alignment: int) -> bool:
    return expected is not None and 0 <= found - expected < alignment


def exact_i2s_flavor(shape: tuple[int, ...], found: int, alignment: int) -> str | None:
    """The type-36 flavor this size matches exactly (smallest slack wins), or None."""
    best: tuple[int, str] | None = None
    for flavor in I2S_FLAVORS:
        expected = expected_nbytes(flavor, shape)
        if is_exact(found, expected, alignment):
            assert expected is not None
            slack = found - expected
            if best is None or slack < best[0]:
                best = (slack, flavor)
    return None if best is None else best[1]


def detect_file_flavor(tensors: Iterable[tuple[tuple[int, ...], int]], alignment: int) -> str | None:
    """The I2_S flavor of a file from its type-36 tensors' (shape, found bytes); None when it has none.

    The flavor most tensors match exactly wins (ties: the order of I2S_FLAVORS). When no tensor matches any
    flavor exactly, the flavor with the smallest total relative deviation is taken, so every tensor can still
    be judged (and reported) against one flavor.
    """
    items = list(tensors)
    if not items:
        return None
    votes = Counter(exact_i2s_flavor(shape, found, alignment) for shape, found in items)
    votes.pop(None, None)
    if votes:
        return max(I2S_FLAVORS, key=lambda f: (votes[f], -I2S_FLAVORS.index(f)))

    def total_deviation(flavor: str) -> float:
        total = 0.0
        for shape, found in items:
            expected = expected_nbytes(flavor, shape)
            total += float("inf") if expected is None else abs(found - expected) / expected
        return total

    return min(I2S_FLAVORS, key=total_deviation)


def tensor_flavors(tensors: Mapping[str, tuple[int, tuple[int, ...], int]], alignment: int) -> dict[str, str]:
    """Flavor of each tensor given as name -> (ggml_type, shape, found bytes); type 36 gets the file's."""
    file_flavor = detect_file_flavor(
        ((shape, found) for ggml_type, shape, found in tensors.values() if ggml_type == GGMLType.I2_S),
        alignment,
    )
    return {
        name: file_flavor if ggml_type == GGMLType.I2_S and file_flavor else FIXED_FLAVOR[ggml_type]
        for name, (ggml_type, _, _) in tensors.items()
    }


@dataclass(frozen=True)
class SizeVerdict:
    """How one tensor's found size compares with its flavor's expected size."""

    flavor: str
    expected: int | None
    found: int
    status: str
    message: str


def _deviation_text(name: str, flavor: str, expected: int, found: int) -> str:
    deviation = found - expected
    percent = 100.0 * deviation / expected
    return (
        f"tensor {name!r} ({flavor}): expected {expected} bytes, found {found} bytes "
        f"(deviation {deviation:+d} bytes, {percent:+.3f}%)"
    )


def judge(
    name: str,
    ggml_type: int,
    shape: tuple[int, ...],
    found: int,
    alignment: int,
    strict: bool,
    file_flavor: str | None = None,
) -> SizeVerdict:
    """Judge one tensor's size; type-36 tensors against the file's flavor, others against their own type."""
    if ggml_type == GGMLType.I2_S:
        flavor = file_flavor or exact_i2s_flavor(shape, found, alignment) or FORMAT_I2S
    else:
        flavor = FIXED_FLAVOR[ggml_type]
    expected = expected_nbytes(flavor, shape)
    if expected is None:
        message = f"tensor {name!r} ({flavor}): shape {shape} cannot be stored in this layout"
        if flavor in (FORMAT_TQ2_0, FORMAT_TQ1_0):
            message += f" (columns {shape[-1]} are not a multiple of 256)"
        return SizeVerdict(flavor, None, found, STATUS_INVALID, message + "; re-export the model")
    if is_exact(found, expected, alignment):
        return SizeVerdict(flavor, expected, found, STATUS_OK, "")
    text = _deviation_text(name, flavor, expected, found)
    if ggml_type != GGMLType.I2_S:
        if found < expected:
            text += " - it overlaps the next tensor"
        return SizeVerdict(flavor, expected, found, STATUS_INVALID, f"{text}; re-export the model")
    other = exact_i2s_flavor(shape, found, alignment)
    if other is not None and other != flavor:
        text += f" - exactly the size of {other}, but the file's type-36 tensors are {flavor}"
    scale_at = i2s_scale_offset(shape)
    if flavor == FORMAT_I2S and found < scale_at + I2S_SCALE_BYTES:
        message = (
            f"{text}: its float32 scale at byte {scale_at} is missing (the 32-byte tail that holds it was "
            f"dropped); {SCALE_REMEDY}"
        )
        return SizeVerdict(flavor, expected, found, STATUS_INVALID, message)
    near = abs(found - expected) <= tolerance(expected)
    if near and not strict:
        padded = " (zero-padded)" if found < expected else ""
        message = (
            f"{text}: within the near-miss tolerance of {tolerance(expected)} bytes, loaded anyway{padded}"
        )
        return SizeVerdict(flavor, expected, found, STATUS_NEAR, message)
    if near:
        return SizeVerdict(flavor, expected, found, STATUS_INVALID, f"{text}; strict mode: {STRICT_REMEDY}")
    return SizeVerdict(
        flavor,
        expected,
        found,
        STATUS_INVALID,
        f"{text}, beyond the near-miss tolerance of {tolerance(expected)} bytes; {LOOSE_REMEDY}",
    )
