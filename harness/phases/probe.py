"""Phase 1, the quant probe: what each weight tensor is, and how every kernel family does on each shape.

Agreement is measured against a numpy float64 matvec of the dequantized weights on the same int8 activations,
so the numbers say whether a kernel computes the format correctly, not only how fast it is. The probe's own
kernel calls are counted in a trace of their own, never in the model's: each candidate runs once for its
error, then once per timed sample (a probe receipt's kernel counters, held against that rule by the verifier).
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.constants import type_name
from engine.errors import EngineError
from engine.formats import FORMATS
from engine.kernels import KERNELS, matvec, prepare_matrix, quantize_activations
from engine.model import Model
from engine.trace import Trace

_TIMED_CALLS = 9
ProgressFn = Callable[[str], None]


def tensor_rows(model: Model) -> list[dict[str, Any]]:
    """One row per tensor of the file: type, flavor, shape, bytes and the gemv kernel chosen for it."""
    gguf = model.file.gguf
    rows = []
    for check in model.file.checks:
        tensor = gguf.tensors[check.name]
        rows.append(
            {
                "name": check.name,
                "format": type_name(tensor.ggml_type),
                "flavor": check.flavor,
                "shape": [int(d) for d in check.shape],
                "bytes": int(check.nbytes),
                "kernel": model.kernel_choices.get(check.name),
            }
        )
    return rows


def _reference_matvec(
    flavor: str, raw: np.ndarray, rows: int, cols: int, q: np.ndarray, s: float
) -> np.ndarray:
    weights = FORMATS[flavor].dequantize(raw, rows, cols).astype(np.float64)
    return weights @ q.astype(np.float64) / np.float64(s)


def candidate_rows(
    model: Model, progress: ProgressFn | None = None, trace: Trace | None = None
) -> list[dict[str, Any]]:
    """Each kernel family on one tensor of each distinct (flavor, shape): error against numpy, and speed;
    the calls are counted in `trace` (a scratch one when None)."""
    seen: dict[tuple[str, int, int], str] = {}
    for name in model.kernel_choices:
        check = next(c for c in model.file.checks if c.name == name)
        rows_, cols_ = (int(d) for d in check.shape)
        seen.setdefault((check.flavor, rows_, cols_), name)
    scratch = (trace or Trace()).counts  # probe calls stay out of the model's trace
    rng = np.random.default_rng(0)
    out_rows: list[dict[str, Any]] = []
    for (flavor, rows, cols), name in seen.items():
        raw = model.file.tensor(name).data
        x = rng.standard_normal((1, cols)).astype(np.float32)
        q = np.zeros((1, cols), np.int8)
        s = np.zeros(1, np.float32)
        quantize_activations(x, q, s, scratch)
        expected = _reference_matvec(flavor, raw, rows, cols, q[0], float(s[0]))
        for family in KERNELS:
            if progress is not None:
                progress(f"{family} on {rows}x{cols} {flavor}")
            try:
                matrix = prepare_matrix(flavor, raw, rows, cols, family)
            except EngineError:
                continue  # a family that cannot hold this format has no candidate row
            out = np.zeros(rows, np.float32)
            matvec(matrix, q[0], float(s[0]), out, scratch)
            error = float(np.max(np.abs(out.astype(np.float64) - expected)))
            seconds = []
            for _ in range(_TIMED_CALLS):
                start = time.perf_counter()
                matvec(matrix, q[0], float(s[0]), out, scratch)
                seconds.append(time.perf_counter() - start)
            median = statistics.median(seconds)
            out_rows.append(
                {
                    "shape": [rows, cols],
                    "kernel": matrix.gemv_id,
                    "variant": matrix.variant,
                    "max_abs_error": error,
                    "gbps": matrix.nbytes_read / median / 1e9,
                    "gmacs": rows * cols / median / 1e9,
                    "seconds": seconds,
                }
            )
    return out_rows


def run_probe(model: Model, progress: ProgressFn | None = None, trace: Trace | None = None) -> dict[str, Any]:
    """The receipt's `phases.probe` section; the probe's kernel calls are counted in `trace` when given."""
    return {"tensors": tensor_rows(model), "candidates": candidate_rows(model, progress, trace)}


def probe_variants(section: dict[str, Any]) -> dict[str, str]:
    """Kernel id -> the instruction-set path the probe's candidates of that kernel ran on."""
    return {row["kernel"]: row["variant"] for row in section["candidates"]}
