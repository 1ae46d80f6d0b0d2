"""What the bytes of type-36 (I2_S) tensors say that their sizes cannot: lost scales, scale tails missing
from every tensor, and bitnet.cpp's 4-row interleaved layout.

- A microsoft I2_S scale is max|w| of the tensor: a zero, negative or non-finite value is a lost scale.
- Microsoft I2_S codes are 0, 1 or 2 in every layout bitnet.cpp writes, never 3. QK256 stores -2, -1, +1, +2
  and so uses all four codes. Type-36 tensors of QK256's exact size that hold no code 3 anywhere are
  microsoft I2_S tensors whose 32-byte scale tails were dropped (n/4 bytes, QK256's size when columns are a
  multiple of 256).
- bitnet.cpp built for x86 without ACT_PARALLEL packs four rows into each byte. Read as the 128-value-block
  layout, every row becomes a mix of quarter rows from four rows, which divides the row-to-row spread of
  the zero count by four. Weights that differ from row to row (trained ones do) show it; independent random
  weights have no row spread to lose, and then nothing can tell the layouts apart. Differences between
  columns are taken out first, so they cannot pass for row differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.flavor import i2s_scale_offset, rows_cols

SCAN_CHUNK = 1 << 20
SAMPLE_TENSORS = 8  # matrices sampled by the interleave test
SAMPLE_ROWS = 512  # rows per sampled matrix
INTERLEAVE_SIGMAS = 8.0  # evidence needed before calling a file 4-row interleaved
INTERLEAVE_RATIO = 2.0  # ...and the interleaved reading's excess spread must be this many times the other
_BLOCK_COLS = 128  # columns must fill whole 128-value blocks for rows to be contiguous bytes
_CODE_ZERO = 1  # the code bitnet.cpp writes for a weight of 0
_SHIFTS = (6, 4, 2, 0)


@dataclass(frozen=True)
class TernaryTensor:
    """One type-36 tensor: its name, numpy shape and bytes (at least the codes and the scale)."""

    name: str
    shape: tuple[int, ...]
    data: np.ndarray


def scale_problem(tensor: TernaryTensor) -> str | None:
    """Why a microsoft I2_S tensor's scale is unusable, or None when it is a positive finite float32."""
    at = i2s_scale_offset(tensor.shape)
    scale = float(tensor.data[at : at + 4].view("<f4")[0])
    if math.isfinite(scale) and scale > 0:
        return None
    return (
        f"tensor {tensor.name!r} (i2s): scale {scale!r} at byte {at} is not a positive finite number "
        f"(bitnet.cpp stores max|w| there; a zero scale zeroes the whole matrix)"
    )


def holds_code3(data: np.ndarray) -> bool:
    """True when any 2-bit field of `data` is 3 (both bits set); scanned in chunks, stopping at the first."""
    for start in range(0, data.size, SCAN_CHUNK):
        chunk = np.asarray(data[start : start + SCAN_CHUNK])
        if np.any(chunk & (chunk >> 1) & 0x55):
            return True
    return False


def tails_missing_everywhere(tensors: Sequence[TernaryTensor]) -> str | None:
    """For a file read as QK256: a one-line finding when no type-36 tensor holds code 3, else None."""
    if not tensors or any(holds_code3(t.data) for t in tensors):
        return None
    values = sum(t.data.size * 4 for t in tensors)
    return (
        f"all {len(tensors)} type-36 tensors have QK256's exact size but none holds code 3 (QK256's +2) "
        f"in {values} values (e.g. {tensors[0].name!r}): they look like microsoft I2_S tensors whose 32-byte "
        f"scale tails are missing, and read as qk256 the model computes garbage; re-export the model keeping "
        f"every I2_S tensor's scale tail"
    )


def _zero_counts_blocks(codes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Zero weights per row when rows are contiguous bytes (the 128-value-block and ARM layouts)."""
    per_row = codes.reshape(rows, cols // 4)
    return sum((((per_row >> s) & 3) == _CODE_ZERO).sum(axis=1) for s in _SHIFTS)


def _zero_counts_interleaved(codes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Zero weights per row when row 4g+k sits in field k (shift 6-2k) of bytes g*cols .. (g+1)*cols."""
    groups = codes.reshape(rows // 4, cols)
    counts = np.stack([(((groups >> s) & 3) == _CODE_ZERO).sum(axis=1) for s in _SHIFTS], axis=1)
    return counts.reshape(rows)


def dispersion(counts: np.ndarray, cols: int) -> float:
    """Row-to-row variance of the zero count over the binomial variance of independent weights (1.0 = rows
    alike). Counts are taken in groups of four rows and each of the four positions loses its mean over the
    groups first: what is the same in every group comes from columns (the same columns sit at that position in
    every group, under either reading), what varies between groups comes from rows."""
    groups = counts.reshape(-1, 4).astype(np.float64)
    residual = groups - groups.mean(axis=0)
    p = float(counts.mean()) / cols
    binomial = cols * p * (1.0 - p)
    variance = float((residual * residual).sum()) / (residual.size - 4)
    return variance / binomial if binomial > 0 else 1.0


@dataclass(frozen=True)
class InterleaveEvidence:
    """Row spread of the zero count under both readings, per sampled tensor, and the combined verdict."""

    names: list[str]
    blocks: list[float]  # dispersion read as 128-value blocks (what the engine reads)
    interleaved: list[float]  # dispersion read as 4-row interleaved
    sigma: float  # standard deviation of the mean difference when rows do not differ

    @property
    def excess_blocks(self) -> float:
        return float(np.mean(self.blocks)) - 1.0 if self.names else 0.0

    @property
    def excess_interleaved(self) -> float:
        return float(np.mean(self.interleaved)) - 1.0 if self.names else 0.0

    @property
    def looks_interleaved(self) -> bool:
        """The interleaved reading shows far more row spread than the block reading, beyond noise."""
        gap = self.excess_interleaved - self.excess_blocks
        return (
            bool(self.names)
            and gap > INTERLEAVE_SIGMAS * self.sigma
            and self.excess_interleaved > INTERLEAVE_RATIO * max(self.excess_blocks, 0.0)
        )


def interleave_evidence(tensors: Iterable[TernaryTensor]) -> InterleaveEvidence:
    """Both readings of up to SAMPLE_TENSORS matrices (rows a multiple of 4, columns a multiple of 128)."""
    names: list[str] = []
    blocks: list[float] = []
    interleaved: list[float] = []
    variance = 0.0
    for tensor in tensors:
        rows, cols = rows_cols(tensor.shape)
        if rows % 4 or rows < 8 or cols % _BLOCK_COLS:
            continue
        sample = min(rows, SAMPLE_ROWS) // 4 * 4
        codes = np.asarray(tensor.data[: sample * cols // 4])
        names.append(tensor.name)
        blocks.append(dispersion(_zero_counts_blocks(codes, sample, cols), cols))
        interleaved.append(dispersion(_zero_counts_interleaved(codes, sample, cols), cols))
        variance += 2 * 2.0 / (sample - 1)  # each reading's dispersion varies by about sqrt(2 / (rows - 1))
        if len(names) == SAMPLE_TENSORS:
            break
    sigma = math.sqrt(variance) / len(names) if names else 0.0
    return InterleaveEvidence(names, blocks, interleaved, sigma)


def interleave_finding(evidence: InterleaveEvidence) -> str | None:
    """A one-line finding when the file looks 4-row interleaved, else None."""
    if not evidence.looks_interleaved:
        return None
    worst = int(np.argmax(np.subtract(evidence.interleaved, evidence.blocks)))
    return (
        f"type-36 tensors look 4-row interleaved (bitnet.cpp's x86 I2_S layout without ACT_PARALLEL), not "
        f"the 128-value-block layout the engine reads: their per-row zero counts spread "
        f"{np.mean(evidence.interleaved):.2f}x the binomial variance read interleaved but "
        f"{np.mean(evidence.blocks):.2f}x read as blocks (e.g. {evidence.names[worst]!r}: "
        f"{evidence.interleaved[worst]:.2f} vs {evidence.blocks[worst]:.2f}), so the engine would compute "
        f"with mixed-up rows; re-quantize with bitnet.cpp's default build (ACT_PARALLEL on)"
    )
