"""Reference weight formats: round trips, agreement with gguf-py, hand-computed bit positions, sizes."""

import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gq

from engine.errors import EngineError, TensorSizeError
from engine.formats import FORMATS, FormatError, bitnet32, i2s, qk256, tq1_0, tq2_0

RNG_SEED = 1234


def random_values(rng: np.random.Generator, fmt: str, rows: int, cols: int) -> np.ndarray:
    if fmt == "qk256":
        return rng.choice(np.array([-2, -1, 1, 2], dtype=np.int8), size=(rows, cols))
    return rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)


def random_scales(rng: np.random.Generator, fmt: str, rows: int, cols: int) -> np.ndarray | float | None:
    if fmt == "i2s":
        return float(rng.uniform(0.01, 2.0))
    if fmt in ("tq2_0", "tq1_0"):
        return rng.uniform(0.01, 2.0, size=(rows, cols // 256)).astype(np.float16)
    if fmt == "bitnet32":
        return rng.uniform(0.01, 2.0, size=-(-rows * cols // 32)).astype(np.float16)
    return None


def random_shape(rng: np.random.Generator, fmt: str) -> tuple[int, int]:
    rows = int(rng.integers(1, 40))
    if fmt in ("tq2_0", "tq1_0"):
        return rows, 256 * int(rng.integers(1, 5))
    if fmt == "i2s":
        return rows * 4, 32 * int(rng.integers(1, 20))  # rows * cols is a multiple of 128
    return rows, int(rng.integers(1, 700))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_random_shapes(fmt: str) -> None:
    module = FORMATS[fmt]
    rng = np.random.default_rng([RNG_SEED, len(fmt)])
    for _ in range(12):
        rows, cols = random_shape(rng, fmt)
        values = random_values(rng, fmt, rows, cols)
        scales = random_scales(rng, fmt, rows, cols)
        raw = module.pack(values, scales)
        assert raw.dtype == np.uint8 and raw.shape == (module.expected_nbytes(rows, cols),)
        got, got_scales = module.unpack(raw, rows, cols)
        assert got.dtype == np.int8 and got.shape == (rows, cols)
        np.testing.assert_array_equal(got, values)
        assert got_scales.dtype == np.float32
        if scales is None:
            assert got_scales.size == 0
        else:
            expected = np.asarray(scales, dtype=np.float16 if fmt != "i2s" else np.float32).astype(np.float32)
            np.testing.assert_array_equal(got_scales, expected.reshape(got_scales.shape))
        deq = module.dequantize(raw, rows, cols)
        assert deq.dtype == np.float32 and deq.shape == (rows, cols)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_unpack_accepts_an_unaligned_view(fmt: str) -> None:
    """Loaders hand over slices of a memmap at any offset."""
    module = FORMATS[fmt]
    rng = np.random.default_rng(7)
    rows, cols = 8, 256
    values = random_values(rng, fmt, rows, cols)
    raw = module.pack(values, random_scales(rng, fmt, rows, cols))
    buffer = np.zeros(raw.size + 3, dtype=np.uint8)
    buffer[3:] = raw
    np.testing.assert_array_equal(module.unpack(buffer[3:], rows, cols)[0], values)


def tq_float_blocks(
    rng: np.random.Generator, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ternary values, fp16 block scales and the float matrix they describe (every block holds a +-1)."""
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    values[:, ::256] = 1
    d = rng.uniform(0.01, 3.0, size=(rows, cols // 256)).astype(np.float16)
    floats = values.astype(np.float32) * np.repeat(d.astype(np.float32), 256, axis=1)
    return values, d, floats


@pytest.mark.parametrize(
    ("module", "qtype"),
    [(tq2_0, GGMLQuantizationType.TQ2_0), (tq1_0, GGMLQuantizationType.TQ1_0)],
)
def test_tq_matches_gguf_py(module, qtype: GGMLQuantizationType) -> None:
    rng = np.random.default_rng(99)
    rows, cols = 6, 768
    values, d, floats = tq_float_blocks(rng, rows, cols)
    ours = module.pack(values, d)
    theirs = gq.quantize(floats, qtype).reshape(-1)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        module.dequantize(ours, rows, cols), gq.dequantize(theirs.reshape(rows, -1), qtype)
    )
    np.testing.assert_array_equal(module.dequantize(ours, rows, cols), floats)


def test_tq1_0_decodes_arbitrary_bytes_like_gguf_py() -> None:
    """Every byte is a valid TQ1_0 byte; our trit extraction must equal ggml's for all of them."""
    rng = np.random.default_rng(5)
    rows, cols = 3, 512
    raw = rng.integers(0, 256, size=tq1_0.expected_nbytes(rows, cols), dtype=np.uint8)
    blocks = raw.reshape(-1, 54)
    blocks[:, 52:] = np.frombuffer(np.float16(0.5).tobytes(), dtype=np.uint8)
    theirs = gq.dequantize(raw.reshape(rows, -1), GGMLQuantizationType.TQ1_0)
    np.testing.assert_array_equal(tq1_0.dequantize(raw, rows, cols), theirs)


def test_tq1_0_encoding_of_every_trit_group() -> None:
    """Bytes are ceil(value * 256 / 243) of the base-3 number with the first trit most significant."""
    values = np.zeros((1, 256), dtype=np.int8) - 1  # all trits 0
    values[0, 0] = 1  # trit 2 in digit 0 of qs[0] -> 162
    values[0, 32] = 0  # trit 1 in digit 1 of qs[0] -> +27
    values[0, 160 + 16 * 4 + 3] = 1  # digit 4 of qs[32 + 3] -> 2
    values[0, 240 + 1 + 4 * 3] = 0  # digit 3 of qh[1] -> 3
    raw = tq1_0.pack(values, 1.0)
    assert raw.size == 54
    assert raw[0] == -(-(162 + 27) * 256 // 243)
    assert raw[35] == -(-2 * 256 // 243)
    assert raw[49] == -(-3 * 256 // 243)
    assert raw[1] == 0 and raw[48] == 0
    assert raw[52:].tobytes() == np.float16(1.0).tobytes()


def test_i2s_bit_positions() -> None:
    rows, cols = 2, 128  # two blocks
    values = np.zeros((rows, cols), dtype=np.int8)
    values[0, 0] = 1  # block 0, value 0 -> byte 0 bits 7-6, code 2
    values[0, 32] = -1  # value 32 -> byte 0 bits 5-4, code 0
    values[0, 127] = 1  # value 127 -> byte 31 bits 1-0, code 2
    values[1, 1] = -1  # block 1, value 1 -> byte 33 bits 7-6
    raw = i2s.pack(values, 0.25)
    n = rows * cols
    assert raw.size == n // 4 + 32 == 96
    zero = 0b01010101  # four zero values (code 1)
    assert raw[0] == 0b10_00_01_01
    assert raw[31] == 0b01_01_01_10
    assert raw[32] == zero and raw[33] == 0b00_01_01_01
    assert all(raw[b] == zero for b in range(64) if b not in (0, 31, 33))
    assert raw[n // 4 : n // 4 + 4].tobytes() == np.float32(0.25).tobytes()
    assert not raw[n // 4 + 4 :].any()
    got, scale = i2s.unpack(raw, rows, cols)
    np.testing.assert_array_equal(got, values)
    assert scale.tolist() == [0.25]
    np.testing.assert_array_equal(i2s.dequantize(raw, rows, cols), values.astype(np.float32) * 0.25)


def test_tq2_0_bit_positions() -> None:
    values = np.zeros((1, 256), dtype=np.int8)
    values[0, 1] = 1  # byte 1 bits 1-0
    values[0, 32] = -1  # byte 0 bits 3-2
    values[0, 128] = 1  # second half: byte 32 bits 1-0
    values[0, 255] = -1  # byte 63 bits 7-6
    raw = tq2_0.pack(values, np.array([[2.0]]))
    assert raw[1] == 0b01_01_01_10
    assert raw[0] == 0b01_01_00_01
    assert raw[32] == 0b01_01_01_10
    assert raw[63] == 0b00_01_01_01
    assert raw[64:].tobytes() == np.float16(2.0).tobytes()


def test_qk256_bit_positions_table_and_row_padding() -> None:
    rows, cols = 2, 300  # two blocks per row, 212 padding values each
    values = np.ones((rows, cols), dtype=np.int8)  # code 2 everywhere
    values[0, :4] = [-2, -1, 1, 2]  # byte 0 = 0 | 1 << 2 | 2 << 4 | 3 << 6
    values[1, 0] = -2
    raw = qk256.pack(values, None)
    assert raw.size == qk256.expected_nbytes(rows, cols) == rows * 2 * 64
    assert raw[0] == 0 | 1 << 2 | 2 << 4 | 3 << 6
    assert raw[1] == 0b10_10_10_10
    assert raw[128] == 0b10_10_10_00  # row 1 starts at its own block
    assert raw[300 // 4 - 1] == 0b10_10_10_10  # last real byte of row 0
    assert not raw[300 // 4 : 128].any()  # padding of row 0 is 0x00
    got, scales = qk256.unpack(raw, rows, cols)
    assert got.shape == (rows, cols) and scales.size == 0
    np.testing.assert_array_equal(got, values)
    np.testing.assert_array_equal(qk256.dequantize(raw, rows, cols), values.astype(np.float32))


def test_bitnet32_bit_positions_scales_and_partial_block() -> None:
    rows, cols = 1, 40  # one full block, one partial block of 8 values
    values = np.zeros((rows, cols), dtype=np.int8)
    values[0, 0] = 1  # byte 0 bits 1-0
    values[0, 3] = -1  # byte 0 bits 7-6
    values[0, 4] = 1  # byte 1 bits 1-0
    values[0, 32] = -1  # block 1, byte 10 bits 1-0
    scales = np.array([0.5, 3.0], dtype=np.float16)
    raw = bitnet32.pack(values, scales)
    assert raw.size == 20
    assert raw[0] == 0b00_01_01_10
    assert raw[1] == 0b01_01_01_10
    assert raw[8:10].tobytes() == np.float16(0.5).tobytes()
    assert raw[10] == 0b01_01_01_00
    assert raw[11] == 0b01010101
    assert all(b == 0x55 for b in raw[12:18])  # padding values are 0 (code 1)
    assert raw[18:20].tobytes() == np.float16(3.0).tobytes()
    got, got_scales = bitnet32.unpack(raw, rows, cols)
    np.testing.assert_array_equal(got, values)
    np.testing.assert_array_equal(got_scales, [0.5, 3.0])
    expected = values.astype(np.float32) * np.repeat([0.5, 3.0], 32)[:40]
    np.testing.assert_array_equal(bitnet32.dequantize(raw, rows, cols), expected)


@pytest.mark.parametrize(
    ("fmt", "rows", "cols", "nbytes"),
    [
        ("i2s", 2560, 2560, 1638432),
        ("i2s", 640, 2560, 409632),
        ("i2s", 6912, 2560, 4423712),
        ("i2s", 2560, 6912, 4423712),
        ("tq2_0", 2560, 2560, 1689600),
        ("tq1_0", 2560, 2560, 1382400),
        ("qk256", 2560, 2560, 1638400),
        ("qk256", 2560, 6912, 2560 * 27 * 64),
        ("bitnet32", 2560, 2560, 2048000),
        ("bitnet32", 640, 2560, 512000),
    ],
)
def test_expected_sizes_for_2b4t_shapes(fmt: str, rows: int, cols: int, nbytes: int) -> None:
    assert FORMATS[fmt].expected_nbytes(rows, cols) == nbytes


def test_i2s_is_32_bytes_over_qk256() -> None:
    """The two flavors must never share a size for the same shape."""
    assert i2s.expected_nbytes(2560, 2560) - qk256.expected_nbytes(2560, 2560) == 32


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_wrong_byte_count_is_a_size_error(fmt: str) -> None:
    module = FORMATS[fmt]
    raw = np.zeros(module.expected_nbytes(4, 256) + 1, dtype=np.uint8)
    with pytest.raises(TensorSizeError, match=fmt):
        module.unpack(raw, 4, 256)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_out_of_range_values_are_rejected(fmt: str) -> None:
    values = np.full((2, 256), 3, dtype=np.int8)
    with pytest.raises(FormatError, match="values must lie in"):
        FORMATS[fmt].pack(values, random_scales(np.random.default_rng(0), fmt, 2, 256))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: qk256.pack(np.zeros((1, 256), dtype=np.int8), None), "0 cannot be stored"),
        (lambda: qk256.pack(np.ones((1, 256), dtype=np.int8), 1.0), "no scales"),
        (lambda: tq2_0.pack(np.zeros((1, 200), dtype=np.int8), 1.0), "multiple of 256"),
        (lambda: tq1_0.expected_nbytes(3, 100), "multiple of 256"),
        (lambda: i2s.pack(np.zeros((1, 100), dtype=np.int8), 1.0), "128-value blocks"),
        (lambda: i2s.pack(np.zeros((1, 128), dtype=np.int8), [1.0, 2.0]), "exactly one"),
        (lambda: i2s.pack(np.zeros((1, 128), dtype=np.float32), 1.0), "integer array"),
        (lambda: i2s.pack(np.zeros(128, dtype=np.int8), 1.0), "2-D"),
        (lambda: tq2_0.pack(np.zeros((2, 256), dtype=np.int8), np.ones(3)), "do not fit"),
        (lambda: tq2_0.pack(np.zeros((1, 256), dtype=np.int8), 1e6), "overflow fp16"),
        (lambda: bitnet32.pack(np.zeros((1, 32), dtype=np.int8), None), "needs block scales"),
        (lambda: bitnet32.expected_nbytes(0, 32), "positive integers"),
        (lambda: i2s.unpack(np.full(64, 0xFF, dtype=np.uint8), 1, 128), "code 3"),
        (lambda: tq2_0.unpack(np.full(66, 0xFF, dtype=np.uint8), 1, 256), "code 3"),
        (lambda: bitnet32.unpack(np.full(10, 0xFF, dtype=np.uint8), 1, 32), "code 3"),
        (lambda: i2s.unpack(np.zeros(64, dtype=np.int8), 1, 128), "must be uint8"),
    ],
)
def test_bad_input_raises_engine_errors(call, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        call()


def test_2b_scale_tensor_packs_quickly() -> None:
    """The largest 2B-4T matrix (6912 x 2560) packs and unpacks in well under a second per format."""
    rng = np.random.default_rng(3)
    rows, cols = 6912, 2560
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    start = time.perf_counter()
    raw = i2s.pack(values, 0.1)
    i2s.unpack(raw, rows, cols)
    assert time.perf_counter() - start < 5.0
