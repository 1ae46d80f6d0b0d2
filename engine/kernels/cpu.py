"""CPU feature detection and the choice between portable kernels and CPU-specific variants.

`select_*` return (GEMV, GEMM, variant name) for a layout: "avx512vnni" (vnni.py: vpdpbusd for the i2s
family and the int8 logits), "avx512bw" (permw.py: vpermw lookups for tl1 / tl2), or "portable"
(ternary.py, lut.py, ops.py) when the host lacks the features or the caller asks for portable. Every
variant adds to the same trace row as its portable twin and returns bit-identical results (the tests run
both).
"""

from collections.abc import Callable
from functools import lru_cache

from engine.kernels import lut, ops, permw, ternary, vnni

VNNI_FEATURES = ("avx512vnni", "avx512vl")
PERMW_FEATURES = ("avx512bw", "avx512vl")


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


def select_blk(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for TQ2_0 / TQ1_0 repacked with 256-value scales."""
    if prefer != "portable" and has_vnni():
        return vnni.i2s_blk_gemv_vnni, vnni.i2s_blk_gemm_vnni, "avx512vnni"
    return ternary.i2s_blk_gemv, ternary.i2s_blk_gemm, "portable"


def select_qk256(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for QK256."""
    if prefer != "portable" and has_vnni():
        return vnni.i2s_qk256_gemv_vnni, vnni.i2s_qk256_gemm_vnni, "avx512vnni"
    return ternary.i2s_qk256_gemv, ternary.i2s_qk256_gemm, "portable"


def select_i2s(prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for microsoft I2_S: "avx512vnni" when the host has it, else "portable"."""
    if prefer != "portable" and has_vnni():
        return vnni.i2s_gemv_vnni, vnni.i2s_gemm_vnni, "avx512vnni"
    return ternary.i2s_gemv, ternary.i2s_gemm, "portable"


def select_tl(kernel: str, prefer: str = "auto") -> tuple[Callable, Callable, str]:
    """(GEMV, GEMM, variant) for "tl1" / "tl2": "avx512bw" (vpermw lookups) when the host has it."""
    if prefer != "portable" and has_permw():
        if kernel == "tl1":
            return permw.tl1_gemv_perm, permw.tl1_gemm_perm, "avx512bw"
        return permw.tl2_gemv_perm, permw.tl2_gemm_perm, "avx512bw"
    if kernel == "tl1":
        return lut.tl1_gemv, lut.tl1_gemm, "portable"
    return lut.tl2_gemv, lut.tl2_gemm, "portable"


def select_logits(hidden: int, prefer: str = "auto") -> tuple[Callable, str]:
    """(int8 logits kernel, variant): vnni.logits_i8_vnni needs AVX-512 VNNI and hidden % 64 == 0.

    Both kernels take the same arguments (emb_q, emb_s, emb_sum, q, s, u, out, counts); the portable one is
    ops.logits_i8.
    """
    if prefer != "portable" and has_vnni() and hidden % 64 == 0:
        return vnni.logits_i8_vnni, "avx512vnni"
    return ops.logits_i8, "portable"
