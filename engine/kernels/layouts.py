"""Load-time weight layouts: `prepare_matrix` turns a stored tensor into a `TernaryMatrix` a kernel runs.

Choices (see ternary.py and lut.py for the kernels):
- microsoft I2_S + kernel "i2s": zero copy. The kernel reads the memmapped bytes as `[rows, cols/128, 32]`
  and the float32 scale at byte n/4; needs cols % 128 == 0 (so the flattened 128-value blocks never cross a
  row).
  The bytes are scanned once for the never-used code 3, which the exact int16 block sums rule out.
- TQ2_0 / TQ1_0 + "i2s", every block that holds a nonzero weight under the same nonzero finite scale (what
  a BitNet b1.58 checkpoint's per-tensor scale gives): repacked as I2_S with that one scale, kernel i2s.
  Blocks under scale 0 contribute nothing and are packed as zeros. The sum is the same multiple of the
  scale, rounded once instead of once per 256 values, with fewer bytes and operations per weight.
- TQ2_0 / TQ1_0 + "i2s", block scales that differ: unpacked and repacked into the I2_S block order
  (code = value + 1) with the fp16 block scales widened to float32 `[rows, cols/256]`: kernel i2s_blk
  (exact per-block sums, one float multiply-add per 256 values). Keeping the source byte layouts would
  cost a decode in the inner loop.
- BitNet-32 + "i2s": the same with 32-value scales `[rows, cols/32]` (kernel i2s_b32). Blocks run over the
  flattened tensor, so cols % 32 == 0 is required (otherwise a block straddles two rows).
- QK256 + "i2s": codes repacked into the I2_S block order, rows padded to 128 columns (kernel i2s_qk256).
- "tl1" / "tl2": any ternary source (i2s, tq2_0, tq1_0, bitnet32) with its scales (per tensor, per 256, per 32
  values); QK256 values {-2, -1, 1, 2} are not ternary and are refused.
Rows narrower than a layout's block are padded with zero weights; the wrappers pad the activations with
zeros into scratch space, so padding never changes a sum.

`matvec` / `matmul` check shapes and dtypes (a wrong shape must fail, never read out of bounds) and call one
numba kernel; scratch arrays come from a per-thread pool, so no call allocates once the pool is warm.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.constants import (
    FORMAT_I2S,
    FORMAT_QK256,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
    ONE_SCALE_FORMATS,
    WEIGHT_FORMATS,
)
from engine.errors import EngineError, check_choice
from engine.kernel_choice import PrefetchChoice
from engine.kernels import lut, ternary
from engine.kernels.cpu import prefetch_for, select_blk, select_i2s, select_qk256, select_tl

KERNELS = ("i2s", "tl1", "tl2")
VARIANTS = ("auto", "portable", "avx2")


class KernelInputError(EngineError):
    """A matrix or activation that a kernel cannot take (format, shape, dtype)."""


@dataclass(eq=False)
class TernaryMatrix:
    """A weight matrix in its execution layout, with the kernel pair that runs it."""

    rows: int
    cols: int
    flavor: str
    kernel: str  # "i2s" | "tl1" | "tl2"
    gemv_id: str
    gemm_id: str
    nbytes_read: int  # weight bytes (codes and scales) read by one matvec
    variant: str = "portable"  # "portable" or an instruction-set path, e.g. "avx512vnni"
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _gemv: Callable = field(default=None, repr=False)
    _gemm: Callable = field(default=None, repr=False)
    prefetch: PrefetchChoice | None = None  # the avx2 kernels' prefetch distance, measured for this width
    scale: np.float32 | None = None  # the one per-tensor scale of the i2s layout; None where rows keep scales


# ---- scratch --------------------------------------------------------------------------------------------

_POOL = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A reusable array of `shape` (contents undefined); grows, never shrinks; one pool per thread."""
    pool = _POOL.__dict__.setdefault("arrays", {})
    n = int(np.prod(shape))
    buf = pool.get((name, dtype))
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1), dtype=dtype)
        pool[(name, dtype)] = buf
    return buf[:n].reshape(shape)


def _padded(q: np.ndarray, width: int) -> np.ndarray:
    """q ([cols] or [T, cols]) with zero columns up to `width`; q itself when already that wide."""
    cols = q.shape[-1]
    if cols == width:
        return q
    out = _scratch("qpad", q.shape[:-1] + (width,), np.int8)
    out[..., :cols] = q
    out[..., cols:] = 0
    return out


# ---- packing helpers ------------------------------------------------------------------------------------


def _plan_args(prefetch: PrefetchChoice | None) -> tuple:
    """The avx2 kernels' trailing argument (their prefetch plan); other variants take none."""
    return () if prefetch is None else (prefetch.plan,)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def pack_i2s_order(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [rows, cols] (cols % 128 == 0, each < 4) -> the I2_S block order [rows, cols/128, 32]."""
    rows, cols = codes.shape
    c = codes.reshape(rows, cols // 128, 4, 32)
    out = c[:, :, 0] << np.uint8(6)
    out |= c[:, :, 1] << np.uint8(4)
    out |= c[:, :, 2] << np.uint8(2)
    out |= c[:, :, 3]
    return np.ascontiguousarray(out)


def _pad_cols(a: np.ndarray, width: int, fill: int | float) -> np.ndarray:
    if a.shape[1] == width:
        return np.ascontiguousarray(a)
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _unpack(flavor: str, raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    from engine.formats import FORMATS

    return FORMATS[flavor].unpack(raw, rows, cols)


def _ternary_scales(flavor: str, scales: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, int, bool]:
    """(float32 scales [rows or 1, blocks], block width in columns, per_tensor) for a ternary flavor."""
    if flavor == FORMAT_I2S:
        return np.asarray(scales, np.float32).reshape(1, 1), cols, True
    if flavor in (FORMAT_TQ2_0, FORMAT_TQ1_0):
        return np.ascontiguousarray(scales, np.float32).reshape(rows, cols // 256), 256, False
    if cols % 32:
        raise KernelInputError(
            f"bitnet32: {rows} x {cols} matrix has blocks that straddle rows (cols must be a multiple of 32)"
        )
    return np.ascontiguousarray(scales, np.float32).reshape(rows, cols // 32), 32, False


def _one_scale(flavor: str, values: np.ndarray, scales: np.ndarray) -> tuple[np.float32, np.ndarray] | None:
    """For TQ2_0 / TQ1_0: the scale every 256-value block holding a nonzero weight shares, and the values
    with the blocks under scale 0 zeroed (they add 0 x their sum either way); None when two scales differ or
    the shared one is not finite, or for another format."""
    if flavor not in ONE_SCALE_FORMATS:
        return None
    rows, cols = values.shape
    blocks = values.reshape(rows, cols // 256, 256)
    d = np.asarray(scales, np.float32).reshape(rows, cols // 256)
    live = blocks.any(axis=2)
    shared = np.unique(d[live & (d != 0)])
    if shared.size > 1 or not np.isfinite(shared).all():
        return None
    dead = live & (d == 0)
    if dead.any():  # only then a copy: the caller's values stay as unpacked
        blocks = blocks.copy()
        blocks[dead] = 0
    return (shared[0] if shared.size else np.float32(0.0)), blocks.reshape(rows, cols)


def _check_i2s_bytes(raw: np.ndarray) -> None:
    if ternary.has_code3(raw):
        raise KernelInputError("i2s: tensor holds 2-bit code 3, which ternary I2_S never uses")


# ---- prepare_matrix -------------------------------------------------------------------------------------


def prepare_matrix(
    flavor: str, raw: np.ndarray, rows: int, cols: int, kernel: str = "i2s", variant: str = "auto"
) -> TernaryMatrix:
    """The execution layout of one stored ternary tensor for `kernel` ("i2s" | "tl1" | "tl2").

    `variant`: "auto" takes the CPU-specific path when the host has it (AVX-512 VNNI vpdpbusd, else AVX2
    vpmaddubsw, for microsoft I2_S, TQ2_0 / TQ1_0 and QK256; AVX-512 BW vpermw lookups for tl1 / tl2),
    "portable" forces plain numba, "avx2" the AVX2 path of the i2s family (tl1 / tl2 then run portable).
    BitNet-32 is portable only. The chosen path is `TernaryMatrix.variant`; all give identical results.
    """
    check_choice("variant", variant, VARIANTS, KernelInputError)
    check_choice("kernel", kernel, KERNELS, KernelInputError)
    if flavor not in WEIGHT_FORMATS:
        names = ", ".join(WEIGHT_FORMATS)
        raise KernelInputError(f"unknown weight format {flavor!r}; expected one of {names}")
    if rows <= 0 or cols <= 0:
        raise KernelInputError(f"matrix dimensions must be positive, got {rows} x {cols}")
    raw = np.asarray(raw).view(np.ndarray).reshape(-1)
    if raw.dtype != np.uint8:
        raise KernelInputError(f"{flavor}: raw tensor data must be uint8, got {raw.dtype}")
    if kernel == "i2s" and flavor == FORMAT_I2S:
        return _prepare_i2s_zero_copy(raw, rows, cols, variant)
    values, scales = _unpack(flavor, raw, rows, cols)
    if kernel == "i2s":
        if flavor == FORMAT_QK256:
            return _prepare_qk256(values, rows, cols, variant)
        one = _one_scale(flavor, values, scales)
        if one is not None:
            scale, live = one
            codes = (live + np.int8(1)).view(np.uint8)
            return _i2s_matrix(flavor, pack_i2s_order(codes), scale, rows, cols, variant)
        return _prepare_blocked(flavor, values, scales, rows, cols, variant)
    if flavor == FORMAT_QK256:
        raise KernelInputError(
            f"{kernel} needs ternary weights; qk256 values are {{-2, -1, 1, 2}} (use kernel i2s)"
        )
    d, block, per_tensor = _ternary_scales(flavor, scales, rows, cols)
    if kernel == "tl1":
        return _prepare_tl1(flavor, values, d, per_tensor, rows, cols, variant)
    return _prepare_tl2(flavor, values, d, block, per_tensor, rows, cols, variant)


def _prepare_i2s_zero_copy(raw: np.ndarray, rows: int, cols: int, variant: str) -> TernaryMatrix:
    if cols % 128:
        raise KernelInputError(
            f"i2s: kernel i2s reads {rows} x {cols} in place and needs cols % 128 == 0 "
            "(use kernel tl1 or tl2)"
        )
    n4 = rows * cols // 4
    if raw.size < n4 + 4:
        raise KernelInputError(f"i2s: tensor holds {raw.size} bytes, {rows} x {cols} needs at least {n4 + 4}")
    body = raw[:n4]
    _check_i2s_bytes(body)
    scale = np.frombuffer(raw[n4 : n4 + 4].tobytes(), dtype="<f4").astype(np.float32)[0]
    if not np.isfinite(scale):
        raise KernelInputError("i2s: the per-tensor scale is not finite")
    return _i2s_matrix(FORMAT_I2S, body.reshape(rows, cols // 128, 32), scale, rows, cols, variant)


def _i2s_matrix(
    flavor: str, w: np.ndarray, scale: np.float32, rows: int, cols: int, variant: str
) -> TernaryMatrix:
    """The i2s kernels over I2_S blocks `w` [rows, cols/128, 32] (codes 0..2) with one finite scale."""
    nb = cols // 128
    gemv, gemm, variant = select_i2s(variant)
    prefetch = prefetch_for(variant, "matrix", cols)
    extra = _plan_args(prefetch)

    def run_gemv(q, s, out, counts):
        gemv(w, scale, q.reshape(nb, 4, 32), np.float32(s), out, cols, counts, *extra)

    def run_gemm(q, s, out, counts):
        qsum = _scratch("qsum", (q.shape[0],), np.int32)
        gemm(w, scale, q.reshape(q.shape[0], nb, 4, 32), s, out, qsum, cols, counts, *extra)

    nbytes = w.nbytes + 4
    return TernaryMatrix(
        rows,
        cols,
        flavor,
        "i2s",
        "i2s_gemv",
        "i2s_gemm",
        nbytes,
        variant,
        {"w": w},
        run_gemv,
        run_gemm,
        prefetch,
        scale=scale,
    )


def _prepare_blocked(
    flavor: str, values: np.ndarray, scales: np.ndarray, rows: int, cols: int, variant: str
) -> TernaryMatrix:
    """TQ2_0 / TQ1_0 (256-value scales) and BitNet-32 (32-value scales) in the I2_S block order."""
    d, block, _ = _ternary_scales(flavor, scales, rows, cols)
    width = _round_up(cols, 128)
    codes = _pad_cols((values + np.int8(1)).view(np.uint8), width, 1)
    w = pack_i2s_order(codes)
    d = _pad_cols(d, width // block, 0.0)
    nb = width // 128
    nsum = width // block
    if block == 256:
        gemv, gemm, variant = select_blk(variant)
        ids = ("i2s_blk_gemv", "i2s_blk_gemm")
    else:
        gemv, gemm, variant = ternary.i2s_b32_gemv, ternary.i2s_b32_gemm, "portable"
        ids = ("i2s_b32_gemv", "i2s_b32_gemm")
    prefetch = prefetch_for(variant, "matrix", width)
    extra = _plan_args(prefetch)

    def run_gemv(q, s, out, counts):
        qp = _padded(q, width).reshape(nb, 4, 32)
        gemv(w, d, qp, np.float32(s), out, _scratch("qsum", (nsum,), np.int32), cols, counts, *extra)

    def run_gemm(q, s, out, counts):
        t = q.shape[0]
        qp = _padded(q, width).reshape(t, nb, 4, 32)
        gemm(w, d, qp, s, out, _scratch("qsum", (t, nsum), np.int32), cols, counts, *extra)

    return TernaryMatrix(
        rows,
        cols,
        flavor,
        "i2s",
        ids[0],
        ids[1],
        w.nbytes + d.nbytes,
        variant,
        {"w": w, "d": d},
        run_gemv,
        run_gemm,
        prefetch,
    )


def _prepare_qk256(values: np.ndarray, rows: int, cols: int, variant: str) -> TernaryMatrix:
    width = _round_up(cols, 128)
    v = values.astype(np.int16)
    codes = (v + 2 - (v > 0)).astype(np.uint8)  # -2, -1, 1, 2 -> 0, 1, 2, 3
    w = pack_i2s_order(_pad_cols(codes, width, 0))
    nb = width // 128
    gemv, gemm, variant = select_qk256(variant)
    prefetch = prefetch_for(variant, "matrix", width)
    extra = _plan_args(prefetch)

    def run_gemv(q, s, out, counts):
        gemv(w, _padded(q, width).reshape(nb, 4, 32), np.float32(s), out, cols, counts, *extra)

    def run_gemm(q, s, out, counts):
        t = q.shape[0]
        qp = _padded(q, width).reshape(t, nb, 4, 32)
        gemm(w, qp, s, out, _scratch("qsum", (t,), np.int32), cols, counts, *extra)

    return TernaryMatrix(
        rows,
        cols,
        FORMAT_QK256,
        "i2s",
        "i2s_qk256_gemv",
        "i2s_qk256_gemm",
        w.nbytes,
        variant,
        {"w": w},
        run_gemv,
        run_gemm,
        prefetch,
    )


def _pad_rows(a: np.ndarray, nrows: int) -> np.ndarray:
    out = np.zeros((nrows,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _row_tiles(a: np.ndarray, fill: int) -> np.ndarray:
    """uint8 [rows, n] -> [tiles, n, ROW_TILE]: rows padded with `fill` to whole tiles, interleaved by row."""
    rows, n = a.shape
    tiles = -(-rows // lut.ROW_TILE)
    padded = np.full((tiles * lut.ROW_TILE, n), fill, dtype=np.uint8)
    padded[:rows] = a
    return np.ascontiguousarray(padded.reshape(tiles, lut.ROW_TILE, n).transpose(0, 2, 1))


def _tile_accumulators(tiles: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        _scratch("tl_acc", (tiles, lut.ROW_TILE), np.int32),
        _scratch("tl_facc", (tiles, lut.ROW_TILE), np.float32),
    )


def _prepare_tl1(
    flavor: str, values: np.ndarray, d: np.ndarray, per_tensor: bool, rows: int, cols: int, variant: str
) -> TernaryMatrix:
    """Pairs -> 4-bit indices 3 (a + 1) + (b + 1), two per byte; a per-tensor row is padded to 4 columns.

    Scale blocks (256 or 32 columns) are whole bytes, so the kernel finds them as idx.shape[1] / d.shape[1].
    """
    width = _round_up(cols, 4)
    v = _pad_cols(values, width, 0).astype(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2 (wraps)
    pair = v[:, 0::2] * np.uint8(3) + v[:, 1::2]
    idx = _row_tiles(pair[:, 0::2] | (pair[:, 1::2] << np.uint8(4)), 0x44)  # pad rows: pairs (0, 0)
    d = d if per_tensor else _pad_rows(d, idx.shape[0] * lut.ROW_TILE)
    nbytes = width // 4
    gemv, gemm, variant = select_tl("tl1", variant)

    def run_gemv(q, s, out, counts):
        tab = _scratch("tl1", (nbytes, 2, lut.TABLE_SLOTS), np.int16)
        acc, facc = _tile_accumulators(idx.shape[0])
        gemv(idx, d, per_tensor, _padded(q, width), np.float32(s), out, tab, acc, facc, cols, counts)

    def run_gemm(q, s, out, counts):
        tab = _scratch("tl1", (lut.TOKEN_CHUNK, nbytes, 2, lut.TABLE_SLOTS), np.int16)
        acc, facc = _tile_accumulators(idx.shape[0])
        gemm(idx, d, per_tensor, _padded(q, width), s, out, tab, acc, facc, cols, counts)

    return TernaryMatrix(
        rows,
        cols,
        flavor,
        "tl1",
        "tl1_gemv",
        "tl1_gemm",
        idx.nbytes + d.nbytes,
        variant,
        {"idx": idx, "d": d},
        run_gemv,
        run_gemm,
    )


def tl2_groups(cols: int, block: int) -> np.ndarray:
    """int32 [groups, 3]: each weight group's columns (-1 = none): triples, then a pair for 1-2 leftovers."""
    nblk = cols // block
    per = block // 3 + (1 if block % 3 else 0)
    gcol = np.full((nblk * per, 3), -1, dtype=np.int32)
    for j in range(per):
        start = 3 * j
        for e in range(3):
            if start + e < block:
                gcol[j::per, e] = np.arange(nblk) * block + start + e
    return gcol


def _encode_tl2(values: np.ndarray, gcol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight groups -> (4-bit canonical index, sign bit) per group; absent columns count as weight 0."""
    rows = values.shape[0]
    trip = np.zeros((rows, gcol.shape[0], 3), dtype=np.int8)
    for e in range(3):
        present = gcol[:, e] >= 0
        trip[:, present, e] = values[:, gcol[present, e]]
    a, b, c = trip[:, :, 0], trip[:, :, 1], trip[:, :, 2]
    first = np.where(a != 0, a, np.where(b != 0, b, c))
    neg = first < 0
    canon = np.where(neg[:, :, None], -trip, trip).astype(np.int16)
    key = (canon[:, :, 0] + 1) * 9 + (canon[:, :, 1] + 1) * 3 + (canon[:, :, 2] + 1)
    lookup = np.full(27, 255, dtype=np.uint8)
    c3 = lut.CANON3
    lookup[(c3[:, 0] + 1) * 9 + (c3[:, 1] + 1) * 3 + (c3[:, 2] + 1)] = np.arange(len(c3), dtype=np.uint8)
    return lookup[key], neg.astype(np.uint8)


def _prepare_tl2(
    flavor: str,
    values: np.ndarray,
    d: np.ndarray,
    block: int,
    per_tensor: bool,
    rows: int,
    cols: int,
    variant: str,
) -> TernaryMatrix:
    gcol = tl2_groups(cols, block)
    groups_per_block = gcol.shape[0] // (cols // block)
    nib, neg = _encode_tl2(values, gcol)
    ng = _round_up(gcol.shape[0], 8)
    nib = _pad_cols(nib, ng, 0)
    neg = _pad_cols(neg, ng, 0)
    idx = _row_tiles(nib[:, 0::2] | (nib[:, 1::2] << np.uint8(4)), 0)
    sign = _row_tiles(np.packbits(neg, axis=1, bitorder="little"), 0)
    d = d if per_tensor else _pad_rows(d, idx.shape[0] * lut.ROW_TILE)
    ngroups = gcol.shape[0]
    gemv, gemm, variant = select_tl("tl2", variant)
    args = (idx, sign, d, per_tensor, groups_per_block, gcol)

    def run_gemv(q, s, out, counts):
        tab = _scratch("tl2", (ngroups, lut.TABLE_SLOTS), np.int16)
        acc, facc = _tile_accumulators(idx.shape[0])
        gemv(*args, q, np.float32(s), out, tab, acc, facc, cols, counts)

    def run_gemm(q, s, out, counts):
        tab = _scratch("tl2", (lut.TOKEN_CHUNK, ngroups, lut.TABLE_SLOTS), np.int16)
        acc, facc = _tile_accumulators(idx.shape[0])
        gemm(*args, q, s, out, tab, acc, facc, cols, counts)

    return TernaryMatrix(
        rows,
        cols,
        flavor,
        "tl2",
        "tl2_gemv",
        "tl2_gemm",
        idx.nbytes + sign.nbytes + d.nbytes,
        variant,
        {"idx": idx, "sign": sign, "d": d, "gcol": gcol},
        run_gemv,
        run_gemm,
    )


# ---- running --------------------------------------------------------------------------------------------


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise KernelInputError(what)


def matvec(m: TernaryMatrix, q: np.ndarray, s: float, out: np.ndarray, counts: np.ndarray) -> None:
    """out[rows] = W q for one token quantized as (q int8[cols], s)."""
    ok = q.dtype == np.int8 and q.shape == (m.cols,) and q.flags.c_contiguous
    _check(ok, f"matvec: q must be contiguous int8[{m.cols}]")
    _check(out.dtype == np.float32 and out.shape == (m.rows,), f"matvec: out must be float32[{m.rows}]")
    m._gemv(q, s, out, counts)


def matmul(m: TernaryMatrix, q: np.ndarray, s: np.ndarray, out: np.ndarray, counts: np.ndarray) -> None:
    """out[T, rows] = (W q_t) for T tokens in one kernel call (prefill)."""
    _check(
        q.dtype == np.int8 and q.ndim == 2 and q.shape[1] == m.cols and q.flags.c_contiguous,
        f"matmul: q must be int8[T, {m.cols}]",
    )
    t = q.shape[0]
    _check(s.dtype == np.float32 and s.shape == (t,), f"matmul: s must be float32[{t}]")
    ok = out.dtype == np.float32 and out.shape == (t, m.rows)
    _check(ok, f"matmul: out must be float32[{t}, {m.rows}]")
    m._gemm(q, s, out, counts)
