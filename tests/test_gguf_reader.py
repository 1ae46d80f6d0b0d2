"""The GGUF parser on well-formed files: metadata of every type, shapes, offsets, alignment, data views."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from engine.constants import GGMLType
from engine.gguf_reader import read_gguf
from engine.gguf_writer import TensorSpec, Typed, write_gguf


def _spec(name, ggml_type, shape, data):
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return TensorSpec(name, int(ggml_type), shape, data.nbytes, lambda: data)


def test_metadata_of_every_value_type_round_trips(tmp_path):
    meta = {
        "s": "héllo",
        "b": True,
        "u32": 7,
        "f32": 0.5,
        "strs": ["a", "", "ü"],
        "ints": [-1, 2, 3],
        "floats": [0.25, -1.5],
        "u8": Typed(GGUFValueType.UINT8, 255),
        "i8": Typed(GGUFValueType.INT8, -128),
        "u16": Typed(GGUFValueType.UINT16, 65535),
        "i16": Typed(GGUFValueType.INT16, -32768),
        "i32": Typed(GGUFValueType.INT32, -5),
        "u64": Typed(GGUFValueType.UINT64, 2**63 + 1),
        "i64": Typed(GGUFValueType.INT64, -(2**62)),
        "f64": Typed(GGUFValueType.FLOAT64, 1e-300),
        "bools": [True, False, True],
        "nested": [[1, 2], [3], Typed(GGUFValueType.ARRAY, [], GGUFValueType.INT32)],
        "deep": [[["x", "y"]], [["z"]]],
        "empty": Typed(GGUFValueType.ARRAY, [], GGUFValueType.UINT8),
        "np_u64": np.array([1, 2**40], dtype=np.uint64),
    }
    path = tmp_path / "meta.gguf"
    write_gguf(path, meta, [_spec("t", GGMLType.F32, (4,), np.arange(4, dtype=np.float32))])
    f = read_gguf(path)
    assert f.version == 3 and f.alignment == 32
    expected = {key: (v.value if isinstance(v, Typed) else v) for key, v in meta.items()}
    expected["np_u64"] = [1, 2**40]
    expected["nested"] = [[1, 2], [3], []]
    assert f.metadata == expected
    types = f.metadata_types
    assert types["s"] == GGUFValueType.STRING and types["b"] == GGUFValueType.BOOL
    assert types["u32"] == GGUFValueType.UINT32 and types["f32"] == GGUFValueType.FLOAT32
    assert types["u64"] == GGUFValueType.UINT64 and types["nested"] == GGUFValueType.ARRAY
    assert list(f.metadata) == list(meta)


def test_shapes_are_numpy_order_and_data_is_a_view(tmp_path):
    mat = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    vec = np.arange(5, dtype=np.float32)
    cube = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    path = tmp_path / "shapes.gguf"
    write_gguf(
        path,
        {"general.architecture": "bitnet"},
        [
            _spec("mat", GGMLType.F32, (6, 10), mat),
            _spec("vec", GGMLType.F32, (5,), vec),
            _spec("cube", GGMLType.F16, (2, 3, 4), cube),
        ],
    )
    f = read_gguf(path)
    assert list(f.tensors) == ["mat", "vec", "cube"]
    t = f.tensors["mat"]
    assert t.shape == (6, 10) and t.ggml_type == GGMLType.F32 and t.n_elements == 60
    assert t.offset % 32 == 0 and t.offset >= f.data_offset
    assert t.nbytes == 256  # 240 bytes of data padded to the next 32-byte boundary
    np.testing.assert_array_equal(t.data[:240].view(np.float32).reshape(6, 10), mat)
    assert isinstance(t.data.base, np.memmap) or isinstance(t.data, np.memmap)
    assert f.tensors["vec"].shape == (5,)
    assert f.tensors["cube"].shape == (2, 3, 4)
    last = f.tensors["cube"]
    assert last.offset + last.nbytes == f.file_size


@pytest.mark.parametrize("alignment", [8, 64, 256])
def test_general_alignment_is_honoured(tmp_path, alignment):
    path = tmp_path / "aligned.gguf"
    a = np.arange(3, dtype=np.float32)
    b = np.arange(7, dtype=np.float32)
    write_gguf(path, {}, [_spec("a", GGMLType.F32, (3,), a), _spec("b", GGMLType.F32, (7,), b)], alignment)
    f = read_gguf(path)
    assert f.alignment == alignment and f.metadata["general.alignment"] == alignment
    assert f.data_offset % alignment == 0
    assert all(t.offset % alignment == 0 for t in f.tensors.values())
    assert f.tensors["a"].nbytes == -(-12 // alignment) * alignment
    np.testing.assert_array_equal(f.tensors["b"].data[:28].view(np.float32), b)


def test_reads_files_written_by_gguf_py(tmp_path):
    path = tmp_path / "upstream.gguf"
    writer = GGUFWriter(str(path), "bitnet")
    writer.add_block_count(3)
    writer.add_token_list(["a", "b"])
    writer.add_float32("x.f", 1.5)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    writer.add_tensor("w", w)
    h = np.ones((2, 256), dtype=np.float16)
    writer.add_tensor("h", h, raw_dtype=GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = read_gguf(path)
    assert f.metadata["general.architecture"] == "bitnet"
    assert f.metadata["bitnet.block_count"] == 3
    assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b"]
    assert f.metadata["x.f"] == 1.5
    assert f.tensors["w"].shape == (3, 4)
    np.testing.assert_array_equal(f.tensors["w"].data[:48].view(np.float32).reshape(3, 4), w)
    assert f.tensors["h"].shape == (2, 256) and f.tensors["h"].ggml_type == GGMLType.F16


def test_type_36_is_readable(tmp_path):
    path = tmp_path / "i2s.gguf"
    raw = np.arange(256 * 256 // 4 + 32, dtype=np.uint8)
    write_gguf(path, {}, [TensorSpec("m", GGMLType.I2_S, (256, 256), raw.nbytes, lambda: raw)])
    t = read_gguf(path).tensors["m"]
    assert t.ggml_type == 36 and t.shape == (256, 256) and t.nbytes == raw.nbytes
    np.testing.assert_array_equal(t.data, raw)
