"""CPU feature detection and the choice between portable kernels and CPU-specific variants.

`select_*` return (GEMV, GEMM, variant name) for a layout: "avx512vnni" (vnni.py: vpdpbusd for the i2s
family and the int8 logits), "avx2" (avx2.py: vpmaddubsw for the same kernels, on hosts without AVX-512
VNNI), "avx512bw" (permw.py: vpermw lookups for tl1 / tl2), or "portable" (ternary.py, lut.py, ops.py) when
the host lacks the features or the caller asks for portable. `prefer`: "auto" (the best path the host has),
"portable", or "avx2" (that path even where AVX-512 VNNI exists, so both can be tested there). Every
variant adds to the same trace row as its portable twin and returns bit-identical results (the tests run
both). The avx2 kernels take one more argument, their prefetch plan (`prefetch_for`).
"""

from collections.abc import Callable
from functools import lru_cache, partial

from engine import kernel_choice
from engine.constants import VARIANT_FEATURES
from engine.errors import EngineError
from engine.kernels import avx2, lut, ops, permw, ternary, vnni

VNNI_FEATURES = VARIANT_FEATURES["avx512vnni"]
PERMW_FEATURES = VARIANT_FEATURES["avx512bw"]
AVX2_FEATURES = VARIANT_FEATURES["avx2"]


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Features LLVM sees on this CPU (names without the sign, e.g. 'avx512vnni')."""
    import llvmlite.binding as llvm

    raw = llvm.get_host_cpu_features()
    return frozenset(name[1:] for name in raw.flatten().split(",") if name.startswith("+"))


def has_vnni() -> bool:
    return all(f in host_features() for f in VNNI_FEATURES)


def has_permw() -> bool:
    return all(f in host_features() for f in PERMW_FEATURES)


def has_avx2() -> bool:
    return all(f in host_features() for f in AVX2_FEATURES)


def _i2s_path(prefer: str) -> str:
    """The i2s-family path for `prefer` on this host: "avx512vnni", "avx2" or "portable"."""
    if prefer == "portable":
        return "portable"
    if prefer == "avx2":
        if not has_avx2():
            raise EngineError("the avx2 kernel variant needs a CPU with AVX2; this one lacks it")
        return "avx2"
    if prefer == "avx512vnni":
        if not has_vnni():
            raise EngineError(
                "the avx512vnni kernel variant needs a CPU with AVX-512 VNNI; this one lacks it"
            )
        return "avx512vnni"
    if has_vnni():
        return "avx512vnni"
    return "avx2" if has_avx2() else "portable"


def prefetch_for(variant: str, kind: str, cols: int) -> kernel_choice.PrefetchChoice | None:
    """The prefetch choice whose plan the `kind` kernels of `variant` take as their last argument on rows
    of `cols` values: this host's measured distance for avx2 (`engine.kernel_choice.prefetch_choice`:
    timed once per machine and row width, then read from the cache), else None (no extra argument)."""
    return kernel_choice.prefetch_choice(kind, cols) if variant == "avx2" else None


def select_blk(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for TQ2_0 / TQ1_0 repacked with 256-value scales."""
    path = _i2s_path(prefer)
    if path == "avx512vnni":
        return vnni.i2s_blk_gemv_vnni, vnni.i2s_blk_gemm_vnni, path
    if path == "avx2":
        return avx2.i2s_blk_gemv_avx2, avx2.i2s_blk_gemm_avx2, path
    return ternary.i2s_blk_gemv, ternary.i2s_blk_gemm, "portable"


def select_qk256(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for QK256."""
    path = _i2s_path(prefer)
    if path == "avx512vnni":
        return vnni.i2s_qk256_gemv_vnni, vnni.i2s_qk256_gemm_vnni, path
    if path == "avx2":
        return avx2.i2s_qk256_gemv_avx2, avx2.i2s_qk256_gemm_avx2, path
    return ternary.i2s_qk256_gemv, ternary.i2s_qk256_gemm, "portable"


def select_i2s(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for microsoft I2_S."""
    path = _i2s_path(prefer)
    if path == "avx512vnni":
        return vnni.i2s_gemv_vnni, vnni.i2s_gemm_vnni, path
    if path == "avx2":
        return avx2.i2s_gemv_avx2, avx2.i2s_gemm_avx2, path
    return ternary.i2s_gemv, ternary.i2s_gemm, "portable"


def select_tl(kernel: str, prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for "tl1" / "tl2": "avx512bw" (vpermw lookups) when the host has it."""
    if prefer == "auto" and has_permw():
        if kernel == "tl1":
            return permw.tl1_gemv_perm, permw.tl1_gemm_perm, "avx512bw"
        return permw.tl2_gemv_perm, permw.tl2_gemm_perm, "avx512bw"
    if kernel == "tl1":
        return lut.tl1_gemv, lut.tl1_gemm, "portable"
    return lut.tl2_gemv, lut.tl2_gemm, "portable"


def select_logits(hidden: int, prefer: str = "auto") -> tuple[Callable, str]:
    """(int8 logits kernel, variant): the CPU-specific kernels need hidden % 64 == 0.

    All three take the same arguments (emb_q, emb_s, emb_sum, q, s, u, out, counts); the portable one is
    ops.logits_i8, and only the VNNI kernel reads the int32 row sums `emb_sum`.
    """
    path = _i2s_path(prefer)
    if path == "avx512vnni" and hidden % 64 == 0:
        return vnni.logits_i8_vnni, path
    if path == "avx2" and hidden % 64 == 0:
        return partial(avx2.logits_i8_avx2, plan=prefetch_for(path, "logits", hidden).plan), path
    return ops.logits_i8, "portable"
