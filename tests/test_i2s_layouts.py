"""Type-36 files written the way bitnet.cpp writes them (tests/bitnet_cpp_files.py), loaded by the
engine: the default x86 layout, lost scale tails, unusable scales, and the two other layouts of late 2025."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.constants import GGMLType
from engine.errors import TensorDataError, TensorSizeError
from engine.formats import FORMATS
from engine.i2s_content import TernaryTensor, holds_code3, interleave_evidence
from engine.loader import load_file, type36_tensors
from tests.bitnet_cpp_files import LEFTOVER, codes_and_scale, iid_weights, pack, quantize_i2s, write_model
from tests.conftest import tiny_tensors

UP = "blk.0.ffn_up.weight"  # (512, 256): n/4 = 32768 bytes of codes, the scale at byte 32768
K = "blk.0.attn_k.weight"


@pytest.fixture(autouse=True)
def _permissive_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BITNET_STRICT_MODE", raising=False)


def _decoded(path: Path, written: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mf = load_file(path, strict=False)
    return {name: FORMATS["i2s"].unpack(mf.tensor(name).data, *v.shape)[0] for name, v in written.items()}


def test_the_writer_follows_the_quantizer() -> None:
    w = np.array([[0.5, -0.25, 0.0, 5e-7] * 32], dtype=np.float32)  # 128 values, one block
    codes, scale = codes_and_scale(w)
    assert scale == 0.5 and codes[0, :4].tolist() == [2, 0, 1, 1]  # |w| < 1e-6 is zero
    raw = quantize_i2s(w)
    assert raw.size == 128 // 4 + 32
    assert raw[0] == (2 << 6) | (codes[0, 32] << 4) | (codes[0, 64] << 2) | codes[0, 96]
    assert raw[32:36].view("<f4")[0] == 0.5 and raw[36:].tobytes() == LEFTOVER
    assert not holds_code3(raw[:32])


def test_x86_file_loads_exactly_even_strict(tmp_path: Path) -> None:
    path = tmp_path / "x86.gguf"
    written = write_model(path, "x86")
    mf = load_file(path, strict=True)
    assert mf.config.weight_format == "i2s" and mf.warnings == []
    for name, values in written.items():
        got, scale = FORMATS["i2s"].unpack(mf.tensor(name).data, *values.shape)
        np.testing.assert_array_equal(got, values)
        assert scale[0] == np.float32(0.0421875)


# (a) every tail missing: each tensor then has QK256's exact size
def test_all_tails_missing_loads_as_qk256_with_a_named_warning(tmp_path: Path) -> None:
    path = tmp_path / "no-tails.gguf"
    write_model(path, "x86", missing_tails=True)
    mf = load_file(path, strict=False)
    assert mf.config.weight_format == "qk256"  # the sizes alone say QK256
    assert all(c.status == "ok" for c in mf.checks)
    [warning] = mf.warnings
    assert "none holds code 3" in warning and "'blk.0.attn_q.weight'" in warning
    assert "scale tails are missing" in warning and "\n" not in warning


def test_all_tails_missing_is_refused_in_strict_mode(tmp_path: Path) -> None:
    path = tmp_path / "no-tails.gguf"
    write_model(path, "x86", missing_tails=True)
    with pytest.raises(TensorDataError, match="look like microsoft I2_S tensors whose 32-byte scale tails"):
        load_file(path, strict=True)


def test_a_real_qk256_file_raises_no_such_finding(make_model) -> None:
    values = np.tile(np.array([-2, -1, 1, 2], dtype=np.int8), (4, 64))
    assert holds_code3(FORMATS["qk256"].pack(values, None))
    mf = load_file(make_model("qk256"), strict=True)
    assert mf.config.weight_format == "qk256" and mf.warnings == []


def test_tensors_must_agree_on_one_flavor(tmp_path: Path) -> None:
    """Six tails missing, one kept: the file reads as QK256, and the one full tensor is named for it."""
    path = tmp_path / "mostly-no-tails.gguf"
    matrices = [name for name, ggml_type, _ in tiny_tensors("i2s") if ggml_type == GGMLType.I2_S]
    write_model(path, "x86", missing_tails=[n for n in matrices if n != UP])
    mf = load_file(path, strict=False)
    near = [w for w in mf.warnings if UP in w]
    assert near and "exactly the size of i2s, but the file's type-36 tensors are qk256" in near[0]
    assert any("none holds code 3" in w for w in mf.warnings)
    with pytest.raises(TensorSizeError, match="ffn_up.*exactly the size of i2s"):
        load_file(path, strict=True)


# (b) one tail missing, or a scale that cannot be one
@pytest.mark.parametrize("strict", [False, True])
def test_one_missing_tail_is_an_error_in_every_mode(tmp_path: Path, strict: bool) -> None:
    path = tmp_path / "one-tail.gguf"
    write_model(path, "x86", missing_tails=[UP])
    with pytest.raises(TensorSizeError) as info:
        load_file(path, strict=strict)
    message = str(info.value)
    assert f"'{UP}' (i2s): expected 32800 bytes, found 32768 bytes" in message
    assert "exactly the size of qk256" in message and "scale at byte 32768 is missing" in message
    assert "\n" not in message


@pytest.mark.parametrize("scale", [0.0, -0.5, math.nan, math.inf])
@pytest.mark.parametrize("strict", [False, True])
def test_a_zero_negative_or_nonfinite_scale_is_an_error(tmp_path: Path, scale: float, strict: bool) -> None:
    path = tmp_path / "bad-scale.gguf"
    write_model(path, "x86", scales={K: scale})
    message = f"'{K}' \\(i2s\\): scale {scale!r} at byte 8192 is not a positive finite number"
    with pytest.raises(TensorDataError, match=message):
        load_file(path, strict=strict)


def test_every_bad_scale_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad-scales.gguf"
    write_model(path, "x86", scales={K: 0.0, UP: math.nan})
    with pytest.raises(TensorDataError, match=f"2 I2_S tensors have unusable scales; first: tensor '{K}'"):
        load_file(path)


# (c) the two other layouts bitnet.cpp writes at the same size
def test_rows4_layout_is_named_when_rows_differ(tmp_path: Path) -> None:
    path = tmp_path / "rows4.gguf"
    written = write_model(path, "x86_rows4")
    mf = load_file(path, strict=False)
    [warning] = mf.warnings
    assert "look 4-row interleaved" in warning and "ACT_PARALLEL" in warning and "'blk.0." in warning
    decoded = _decoded(path, written)
    assert not any(np.array_equal(decoded[n], v) for n, v in written.items())  # it is wrong, and said so
    with pytest.raises(TensorDataError, match="look 4-row interleaved.*strict mode"):
        load_file(path, strict=True)


def test_the_default_layout_is_never_taken_for_rows4(tmp_path: Path) -> None:
    path = tmp_path / "x86.gguf"
    write_model(path, "x86")
    evidence = interleave_evidence(type36_tensors(load_file(path)))
    assert evidence.excess_blocks > 3 * evidence.excess_interleaved  # rows differ, read correctly
    assert not evidence.looks_interleaved


def test_rows4_cannot_be_told_from_x86_when_weights_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "rows4-iid.gguf"
    written = write_model(path, "x86_rows4", weights=iid_weights())
    assert load_file(path, strict=True).warnings == []  # silently wrong: nothing in the bytes shows it
    assert not any(np.array_equal(v, written[n]) for n, v in _decoded(path, written).items())


def test_arm_layout_is_a_column_permutation_no_statistic_can_see(tmp_path: Path) -> None:
    """ARM's 64-value blocks read as 128-value blocks move values only within each 128-column block, the same
    way in every row: rows keep their values, so neither the sizes, the codes nor the rows reveal it."""
    path = tmp_path / "arm.gguf"
    written = write_model(path, "arm")
    assert load_file(path, strict=True).warnings == []
    decoded = _decoded(path, written)
    j = np.arange(128)
    arm_byte, arm_field = 16 * (j // 64) + j % 16, (j % 64) // 16  # where ARM puts value j of 128
    read_as = 32 * arm_field + arm_byte  # which value the 128-block reading takes from there
    perm = np.empty(128, dtype=np.int64)
    perm[read_as] = j
    for name, values in written.items():
        assert not np.array_equal(decoded[name], values)
        rows, cols = values.shape
        expect = values.reshape(rows, cols // 128, 128)[:, :, perm].reshape(rows, cols)
        np.testing.assert_array_equal(decoded[name], expect)
        np.testing.assert_array_equal(np.sort(decoded[name], axis=1), np.sort(values, axis=1))


@pytest.mark.parametrize("layout", ["x86", "x86_rows4"])
def test_columns_that_differ_never_pass_for_rows_that_differ(layout: str) -> None:
    """Zero shares of 20-60 % per column, rows alike: neither reading may see row structure."""
    rng = np.random.default_rng(5)
    tensors = []
    for i in range(7):
        share = rng.uniform(0.2, 0.6, size=(1, 2560))
        values = np.where(rng.random((512, 2560)) < share, 0, rng.choice([-1, 1], size=(512, 2560)))
        tensors.append(TernaryTensor(f"m{i}", (512, 2560), pack(codes_and_scale(values)[0], layout)))
    evidence = interleave_evidence(tensors)
    assert not evidence.looks_interleaved
    assert abs(evidence.excess_blocks) < 0.2 and abs(evidence.excess_interleaved) < 0.2


def test_interleave_test_stays_quiet_on_independent_weights() -> None:
    """No false alarm over 50 random files' worth of matrices read either way."""
    make = iid_weights()
    for seed in range(50):
        for layout in ("x86", "x86_rows4", "arm"):
            values = make(f"m{seed}", 512, 256)
            codes, _ = codes_and_scale(values)
            tensor = TernaryTensor("m", (512, 256), pack(codes, layout))
            assert not interleave_evidence([tensor]).looks_interleaved
