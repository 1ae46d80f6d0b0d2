"""Sizes per layout, the exact/near/invalid verdicts, and telling the type-36 flavors apart."""

import pytest

from engine.constants import GGMLType
from engine.flavor import (
    STATUS_INVALID,
    STATUS_NEAR,
    STATUS_OK,
    detect_file_flavor,
    exact_i2s_flavor,
    expected_nbytes,
    fixed_nbytes,
    judge,
    tolerance,
)
from engine.formats import FORMATS

I2S = GGMLType.I2_S


@pytest.mark.parametrize(
    ("flavor", "shape", "nbytes"),
    [
        ("f32", (3, 5), 60),
        ("f16", (7,), 14),
        ("bf16", (2, 4), 16),
        ("tq2_0", (2, 512), 2 * 2 * 66),
        ("tq1_0", (3, 256), 3 * 54),
        ("tq2_0", (2, 300), None),
        ("tq1_0", (1, 100), None),
        ("i2s", (256, 256), 16384 + 32),
        ("i2s", (2560, 6912), 2560 * 6912 // 4 + 32),
        ("qk256", (256, 256), 256 * 64),
        ("qk256", (3, 300), 3 * 2 * 64),  # 300 columns pad to two 256-value blocks per row
        ("qk256", (640, 2560), 640 * 10 * 64),
        ("bitnet32", (256, 256), 2048 * 10),
        ("bitnet32", (3, 11), 2 * 10),  # 33 values -> ceil(33 / 32) = 2 blocks
    ],
)
def test_expected_sizes(flavor, shape, nbytes):
    assert expected_nbytes(flavor, shape) == nbytes


@pytest.mark.parametrize("fmt", ["i2s", "qk256", "bitnet32", "tq2_0", "tq1_0"])
@pytest.mark.parametrize("shape", [(256, 256), (640, 2560), (2560, 6912), (5, 768)])
def test_sizes_agree_with_the_format_modules(fmt, shape):
    assert expected_nbytes(fmt, shape) == FORMATS[fmt].expected_nbytes(*shape)


def test_fixed_sizes_only_for_fixed_layouts():
    assert fixed_nbytes(GGMLType.F32, (10,)) == 40
    assert fixed_nbytes(GGMLType.TQ2_0, (1, 256)) == 66
    assert fixed_nbytes(I2S, (1, 256)) is None


@pytest.mark.parametrize(
    ("expected", "tol"),
    [(10, 8), (8000, 8), (8999, 8), (9000, 9), (16416, 16), (32800, 32), (1_638_432, 1638), (10**9, 10**6)],
)
def test_tolerance_is_max_of_a_tenth_of_a_percent_and_8_bytes(expected, tol):
    assert tolerance(expected) == tol


@pytest.mark.parametrize("flavor", ["i2s", "qk256"])
@pytest.mark.parametrize("shape", [(512, 256), (2560, 2560), (6912, 2560)])
def test_near_miss_boundary(flavor, shape):
    expected = expected_nbytes(flavor, shape)
    tol = tolerance(expected)
    # A short I2_S tensor is a near miss only while its scale (bytes n/4 .. n/4 + 4) is whole.
    shortest = expected - 28 if flavor == "i2s" else expected - tol
    for found, status in [
        (expected, STATUS_OK),
        (expected + 31, STATUS_OK),  # padding to the 32-byte alignment
        (shortest, STATUS_NEAR),
        (shortest - 1, STATUS_INVALID),
        (expected + max(tol, 32), STATUS_NEAR if tol >= 32 else STATUS_INVALID),
        (expected + tol + 1, STATUS_INVALID),
    ]:
        verdict = judge("w", I2S, shape, found, 32, strict=False, file_flavor=flavor)
        assert (found, verdict.status) == (found, status)
        strict = judge("w", I2S, shape, found, 32, strict=True, file_flavor=flavor)
        assert strict.status == (STATUS_OK if status == STATUS_OK else STATUS_INVALID)


def test_exact_means_slack_below_the_alignment():
    shape = (256, 256)
    e = expected_nbytes("i2s", shape)
    assert exact_i2s_flavor(shape, e, 32) == "i2s"
    assert exact_i2s_flavor(shape, e + 31, 32) == "i2s"
    assert exact_i2s_flavor(shape, e + 32, 32) is None
    # One byte short of I2_S is within QK256's padding: why a file's flavor, not one tensor's, decides.
    assert exact_i2s_flavor(shape, e - 1, 32) == "qk256"


def test_each_flavor_is_detected_by_size():
    shape = (640, 2560)
    for fmt in ("i2s", "qk256", "bitnet32"):
        found = expected_nbytes(fmt, shape)
        assert exact_i2s_flavor(shape, found, 32) == fmt
        assert (
            detect_file_flavor([(shape, found), ((2560, 2560), expected_nbytes(fmt, (2560, 2560)))], 32)
            == fmt
        )


def test_qk256_with_row_padding_is_detected():
    shape = (4, 300)  # cols not a multiple of 256: each row padded to two blocks
    found = expected_nbytes("qk256", shape)
    assert found == 512
    assert exact_i2s_flavor(shape, found, 32) == "qk256"
    assert judge("w", I2S, shape, found, 32, strict=True, file_flavor="qk256").status == STATUS_OK


def test_smallest_slack_wins_when_two_flavors_are_exact():
    shape = (256, 256)  # with 64-byte alignment the i2s size is also within QK256's padding
    found = expected_nbytes("i2s", shape)
    assert 0 <= found - expected_nbytes("qk256", shape) < 64
    assert exact_i2s_flavor(shape, found, 64) == "i2s"


@pytest.mark.parametrize("strict", [False, True])
def test_microsoft_i2s_is_never_taken_for_qk256(strict):
    big, small = (512, 256), (256, 256)
    short = expected_nbytes("i2s", big) - 32
    assert short == expected_nbytes("qk256", big)  # the short tensor has QK256's exact size
    tensors = [(small, expected_nbytes("i2s", small))] * 5 + [(big, short)]
    file_flavor = detect_file_flavor(tensors, 32)
    assert file_flavor == "i2s"
    verdict = judge("blk.0.ffn_up.weight", I2S, big, short, 32, strict, file_flavor)
    assert verdict.flavor == "i2s"
    assert verdict.expected == expected_nbytes("i2s", big)
    assert "deviation -32 bytes" in verdict.message
    assert "exactly the size of qk256, but the file's type-36 tensors are i2s" in verdict.message
    assert "scale at byte 32768 is missing" in verdict.message
    assert verdict.status == STATUS_INVALID  # padding would give it scale 0.0, in either mode


def test_no_exact_match_falls_back_to_the_closest_flavor():
    shape = (2560, 2560)
    found = expected_nbytes("bitnet32", shape) - 40
    assert detect_file_flavor([(shape, found)], 32) == "bitnet32"
    assert detect_file_flavor([], 32) is None


def test_fixed_type_short_gap_overlaps_and_long_gap_is_invalid():
    short = judge("tq", GGMLType.TQ2_0, (2, 256), 100, 32, strict=False)
    assert short.status == STATUS_INVALID and "overlaps the next tensor" in short.message
    long = judge("f", GGMLType.F32, (8,), 32 + 32, 32, strict=False)
    assert long.status == STATUS_INVALID and "expected 32 bytes, found 64 bytes" in long.message


def test_ternary_columns_not_multiple_of_256_are_invalid():
    verdict = judge("tq", GGMLType.TQ1_0, (2, 300), 128, 32, strict=False)
    assert verdict.status == STATUS_INVALID
    assert "not a multiple of 256" in verdict.message


def test_size_error_message_components():
    shape = (2560, 2560)
    expected = expected_nbytes("i2s", shape)
    found = expected - 4000
    message = judge("blk.3.attn_q.weight", I2S, shape, found, 32, strict=False, file_flavor="i2s").message
    assert "'blk.3.attn_q.weight'" in message
    assert f"expected {expected} bytes" in message and f"found {found} bytes" in message
    assert f"{100 * -4000 / expected:+.3f}%" in message
    assert "re-export" in message
    strict_message = judge("w", I2S, shape, expected - 4, 32, strict=True, file_flavor="i2s").message
    assert "drop --strict-loader / BITNET_STRICT_MODE to accept near misses" in strict_message
