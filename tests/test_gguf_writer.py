"""The streaming writer: files gguf-py's reader accepts, typed metadata, one tensor at a time, atomic."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from engine.constants import GGMLType
from engine.formats import FORMATS
from engine.gguf_reader import read_gguf
from engine.gguf_writer import TensorSpec, Typed, write_gguf


def _array_spec(name, ggml_type, shape, data):
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return TensorSpec(name, int(ggml_type), shape, raw.nbytes, lambda: raw)


def _ternary(rng, rows, cols):
    return rng.integers(-1, 2, (rows, cols)).astype(np.int8)


def test_gguf_py_reads_tq1_tq2_f32_f16_files(tmp_path):
    rng = np.random.default_rng(0)
    rows, cols = 4, 512
    tq2 = FORMATS["tq2_0"].pack(_ternary(rng, rows, cols), np.full((rows, 2), 0.5, np.float16))
    tq1 = FORMATS["tq1_0"].pack(_ternary(rng, rows, cols), np.full((rows, 2), 0.25, np.float16))
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal((7,)).astype(np.float16)
    specs = [
        _array_spec("tq2", GGMLType.TQ2_0, (rows, cols), tq2),
        _array_spec("tq1", GGMLType.TQ1_0, (rows, cols), tq1),
        _array_spec("f32", GGMLType.F32, (3, 5), f32),
        _array_spec("f16", GGMLType.F16, (7,), f16),
    ]
    meta = {
        "general.architecture": "bitnet",
        "bitnet.block_count": 2,
        "x.float": 0.5,
        "x.tokens": ["a", "bc"],
        "x.ints": [1, -2],
        "x.u64": Typed(GGUFValueType.UINT64, 2**40),
        "x.bool": False,
    }
    path = tmp_path / "upstream_types.gguf"
    write_gguf(path, meta, specs)

    reader = GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["tq2"].tensor_type == GGMLQuantizationType.TQ2_0
    assert tensors["tq1"].tensor_type == GGMLQuantizationType.TQ1_0
    assert list(tensors["tq2"].shape) == [cols, rows]  # gguf-py reports ne order
    np.testing.assert_array_equal(np.asarray(tensors["tq2"].data).reshape(-1), tq2)
    np.testing.assert_array_equal(np.asarray(tensors["tq1"].data).reshape(-1), tq1)
    np.testing.assert_array_equal(np.asarray(tensors["f32"].data).reshape(3, 5), f32)
    np.testing.assert_array_equal(np.asarray(tensors["f16"].data), f16)
    fields = reader.fields
    assert fields["general.architecture"].contents() == "bitnet"
    assert fields["bitnet.block_count"].types == [GGUFValueType.UINT32]
    assert fields["x.float"].types == [GGUFValueType.FLOAT32]
    assert fields["x.tokens"].contents() == ["a", "bc"]
    assert fields["x.ints"].types == [GGUFValueType.ARRAY, GGUFValueType.INT32]
    assert fields["x.ints"].contents() == [1, -2]
    assert fields["x.u64"].types == [GGUFValueType.UINT64] and fields["x.u64"].contents() == 2**40
    assert fields["x.bool"].contents() is False


def test_tensors_are_produced_one_at_a_time(tmp_path):
    events = []

    def producer(name, n):
        def produce():
            events.append(name)
            return np.full(n, len(events), dtype=np.uint8)

        return produce

    specs = [
        TensorSpec(f"t{i}", GGMLType.F16, (n // 2,), n, producer(f"t{i}", n))
        for i, n in enumerate((6, 64, 2))
    ]
    write_gguf(tmp_path / "s.gguf", {}, specs)
    assert events == ["t0", "t1", "t2"]
    f = read_gguf(tmp_path / "s.gguf")
    assert [int(f.tensors[f"t{i}"].data[0]) for i in range(3)] == [1, 2, 3]


def test_a_tensor_can_be_produced_in_chunks(tmp_path):
    chunks = lambda: (np.full(4, i, dtype=np.uint8) for i in range(3))  # noqa: E731
    write_gguf(tmp_path / "c.gguf", {}, [TensorSpec("c", GGMLType.F16, (6,), 12, chunks)])
    data = read_gguf(tmp_path / "c.gguf").tensors["c"].data
    assert list(data[:12]) == [0] * 4 + [1] * 4 + [2] * 4
    too_many = TensorSpec("c", GGMLType.F16, (4,), 8, chunks)
    with pytest.raises(ValueError, match="spec says 8"):
        write_gguf(tmp_path / "d.gguf", {}, [too_many])
    assert not (tmp_path / "d.gguf").exists()


def test_failed_write_leaves_nothing(tmp_path):
    good = TensorSpec("a", GGMLType.F32, (2,), 8, lambda: np.zeros(2, np.float32))
    bad = TensorSpec("b", GGMLType.F32, (2,), 8, lambda: np.zeros(3, np.float32))
    target = tmp_path / "never.gguf"
    with pytest.raises(ValueError, match="'b'.*12 bytes.*8"):
        write_gguf(target, {}, [good, bad])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("meta", "specs", "match"),
    [
        ({"neg": -1}, [], "does not fit UINT32"),
        ({"big": 2**32}, [], "does not fit UINT32"),
        ({"empty": []}, [], "empty array needs Typed"),
        ({"obj": object()}, [], "no GGUF value type"),
        ({"ints": [1, 2**31]}, [], "do not fit INT32"),
        ({}, [TensorSpec("x", 0, (1,), 4, np.zeros)] * 2, "duplicate tensor name"),
        ({}, [TensorSpec("x", 0, (0,), 4, np.zeros)], "bad shape"),
    ],
)
def test_bad_writer_input_is_refused(tmp_path, meta, specs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        write_gguf(tmp_path / "x.gguf", meta, specs)
    assert not (tmp_path / "x.gguf").exists()


def test_alignment_must_agree_with_metadata(tmp_path):
    with pytest.raises(ValueError, match="differs"):
        write_gguf(tmp_path / "x.gguf", {"general.alignment": 64}, [], alignment=32)
    write_gguf(tmp_path / "y.gguf", {"general.alignment": 64}, [], alignment=64)
    assert read_gguf(tmp_path / "y.gguf").alignment == 64
