"""Fuzzed GGUF input: every mutated or hand-built file ends in the engine's own one-line error (or loads).

Hypothesis drives structure-aware mutations (fuzz/gguf_mutations.py) of real tiny-preset files written by
engine.synth and hostile headers built field by field; each input must finish in under a second and 256 MB of
traced allocations. The budget is fixed (max_examples, derandomize=True) so CI runs the same inputs each time.
The corpus in tests/corpus/gguf (kept by `python -m fuzz.gguf_fuzz --save-corpus`) is replayed through the
reader, the loader and `model inspect`.
"""

import json
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.errors import GGUFFormatError
from engine.gguf_reader import MAX_ARRAY_VALUES, MAX_METADATA_KEYS, MAX_NESTED_ARRAYS, MAX_TENSORS, read_gguf
from fuzz.gguf_fuzz import MAX_SECONDS, MAX_TRACED_BYTES, RECIPES, bounded_check, replay_recipe, write_bases
from fuzz.gguf_mutations import build_random_gguf, layout, mutate
from harness.cli import app

CORPUS = Path(__file__).parent / "corpus" / "gguf"
FUZZ = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, bytes]:
    return write_bases(tmp_path_factory.mktemp("bases"))


def _assert_bounded(path: Path) -> str:
    outcome, seconds, peak = bounded_check(path)
    assert seconds < MAX_SECONDS, f"{path}: {seconds:.2f} s"
    assert peak < MAX_TRACED_BYTES, f"{path}: {peak / 2**20:.0f} MB traced"
    return outcome


def _chooser(data: st.DataObject):
    return lambda n: data.draw(st.integers(0, n - 1))


def test_layout_names_every_byte_of_the_synthetic_files(bases):
    """The mutations aim at real fields: the walk covers each file end to end with no gap or overlap."""
    for data in bases.values():
        fields = layout(data)
        position = 0
        for f in fields:
            assert f.start == position, f
            position = f.end
        assert position == len(data)
        kinds = {f.kind for f in fields}
        assert {"tensor_count", "kv_count", "str_len", "array_len", "dim", "offset", "tensor_type"} <= kinds


@FUZZ
@given(data=st.data())
def test_mutated_synthetic_models_fail_cleanly(tmp_path, bases, data):
    base = data.draw(st.sampled_from(sorted(bases)))
    mutated, _ = mutate(bases[base], _chooser(data), data.draw(st.integers(1, 3)))
    path = tmp_path / "mutated.gguf"
    path.write_bytes(mutated)
    assert _assert_bounded(path) in {
        "loaded",
        "rejected: GGUFFormatError",
        "rejected: TensorSizeError",
        "rejected: UnsupportedModelError",
        "rejected: EngineError",
    }


@FUZZ
@given(data=st.data())
def test_hand_built_headers_fail_cleanly(tmp_path, data):
    path = tmp_path / "built.gguf"
    path.write_bytes(build_random_gguf(_chooser(data)))
    assert _assert_bounded(path).startswith(("rejected: ", "loaded"))


def _truncations(tmp_path: Path, data: bytes, every_string: bool) -> int:
    """Cut the file at field boundaries (and one byte before each); returns how many cuts were checked.

    Header cuts must raise a one-line GGUFFormatError; cuts in the tensor data must be refused by the loader.
    Without `every_string`, only every 64th boundary inside the tokenizer's string arrays is cut.
    """
    fields = layout(data)
    header_end = next(f.start for f in fields if f.kind == "tensor_data")
    whole = tmp_path / "whole.gguf"
    whole.write_bytes(data)
    points = {t.offset + d for t in read_gguf(whole).tensors.values() for d in (-1, 0, 1)}
    for index, f in enumerate(fields):
        if every_string or f.kind not in ("str_len", "str_bytes") or index % 64 == 0:
            points.update((f.start, max(f.start - 1, 0), f.end - 1))
    path = tmp_path / "cut.gguf"
    cuts = sorted(p for p in points if p < len(data))
    for cut in cuts:
        path.write_bytes(data[:cut])
        if cut <= header_end:
            with pytest.raises(GGUFFormatError) as info:
                read_gguf(path)
            assert "\n" not in str(info.value)
        else:
            assert _assert_bounded(path).startswith("rejected: "), cut
    return len(cuts)


def test_truncation_at_region_boundaries(tmp_path, bases):
    """Every structural field boundary of the synthetic model, a sample inside the vocabulary."""
    assert _truncations(tmp_path, bases["tiny-tq1_0-bitnet"], every_string=False) > 300


@pytest.mark.slow
def test_truncation_at_every_region_boundary(tmp_path, bases):
    assert _truncations(tmp_path, bases["tiny-i2s-bitnet-b1.58"], every_string=True) > 7000


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _kv_array(elem_type: int, count: int, body: bytes) -> bytes:
    head = b"GGUF" + _u32(3) + _u64(0) + _u64(1) + _u64(1) + b"k" + _u32(9)
    return head + _u32(elem_type) + _u64(count) + body


AMPLIFIERS = {
    # Small files that once became millions of Python objects (seconds to minutes, hundreds of MB).
    "u8 array past the value cap": (
        _kv_array(0, MAX_ARRAY_VALUES + 1, bytes(MAX_ARRAY_VALUES + 1)),
        "values",
    ),
    "nested empty arrays": (
        _kv_array(9, MAX_NESTED_ARRAYS + 1, (_u32(0) + _u64(0)) * (MAX_NESTED_ARRAYS + 1)),
        "nested arrays",
    ),
    "too many tensors": (
        b"GGUF"
        + _u32(3)
        + _u64(MAX_TENSORS + 1)
        + _u64(0)
        + (_u64(1) + b"t" + _u32(1) + _u64(1) + _u32(0) + _u64(0)) * (MAX_TENSORS + 1),
        "tensors",
    ),
    "too many keys": (
        b"GGUF"
        + _u32(3)
        + _u64(0)
        + _u64(MAX_METADATA_KEYS + 1)
        + (_u64(1) + b"k" + _u32(0) + b"\0") * (MAX_METADATA_KEYS + 1),
        "keys",
    ),
}


@pytest.mark.parametrize("case", list(AMPLIFIERS))
def test_amplifying_files_are_refused_fast(tmp_path, case):
    content, word = AMPLIFIERS[case]
    path = tmp_path / "amp.gguf"
    path.write_bytes(content)
    outcome = _assert_bounded(path)
    assert outcome == "rejected: GGUFFormatError"
    with pytest.raises(GGUFFormatError, match=word):
        read_gguf(path)


def _corpus_inputs(bases: dict[str, bytes]) -> list[tuple[str, bytes]]:
    inputs = [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.gguf"))]
    recipes = json.loads((CORPUS / RECIPES).read_text())
    inputs += [(f"recipe-{i}", replay_recipe(bases, r)) for i, r in enumerate(recipes)]
    return inputs


def test_corpus_replays_with_its_recorded_outcomes(tmp_path, bases):
    recipes = json.loads((CORPUS / RECIPES).read_text())
    assert len(recipes) >= 20 and len(list(CORPUS.glob("*.gguf"))) >= 5
    path = tmp_path / "corpus.gguf"
    for recipe in recipes:
        path.write_bytes(replay_recipe(bases, recipe))
        assert _assert_bounded(path) == recipe["outcome"], recipe["signature"]
    for name, data in _corpus_inputs(bases):
        path.write_bytes(data)
        assert _assert_bounded(path).startswith(("rejected: ", "loaded")), name


def test_model_inspect_on_the_corpus_exits_cleanly(tmp_path, bases):
    """Exit 2 with one `error:` line for unreadable files; 0 or 1 (a report) for readable ones."""
    runner = CliRunner()
    path = tmp_path / "inspect.gguf"
    codes = set()
    for name, data in _corpus_inputs(bases):
        path.write_bytes(data)
        result = runner.invoke(app, ["model", "inspect", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (name, result.exception)
        assert result.exit_code in (0, 1, 2), name
        codes.add(result.exit_code)
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    assert {1, 2} <= codes


_RSS_SCRIPT = """
import resource, sys
from pathlib import Path
from engine.errors import EngineError
from engine.gguf_reader import read_gguf
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for p in sys.argv[1:]:
    try:
        read_gguf(p)
    except EngineError:
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_resident_memory_of_a_sample_in_a_subprocess(tmp_path, bases):
    """Peak RSS growth (not only traced allocations) while reading the corpus and the amplifiers."""
    paths = []
    for i, (_name, data) in enumerate(_corpus_inputs(bases)[:30]):
        paths.append(tmp_path / f"{i}.gguf")
        paths[-1].write_bytes(data)
    for i, (content, _word) in enumerate(AMPLIFIERS.values()):
        paths.append(tmp_path / f"amp{i}.gguf")
        paths[-1].write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    growth_kb = int(proc.stdout.strip())
    assert growth_kb * 1024 < 256 * 2**20
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 0
