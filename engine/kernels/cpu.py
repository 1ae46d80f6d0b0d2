"""CPU feature detection and the choice of the i2s GEMV variant (AVX-512 VNNI intrinsic or portable)."""

from collections.abc import Callable
from functools import lru_cache

from engine.kernels import ternary


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """Features LLVM sees on this CPU (names without the sign, e.g. 'avx512vnni')."""
    import llvmlite.binding as llvm

    raw = llvm.get_host_cpu_features()
    return frozenset(name[1:] for name in raw.flatten().split(",") if name.startswith("+"))


def select_i2s_gemv() -> tuple[Callable, str]:
    """(kernel, variant name) for the microsoft I2_S GEMV on this machine."""
    return ternary.i2s_gemv, "portable"
