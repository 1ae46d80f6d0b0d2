"""Receipt values as text for every report (terminal, markdown, HTML): a missing or malformed field shows as
`-` instead of failing, numbers in readable units."""

from collections.abc import Mapping
from typing import Any

from harness.receipts.expectations import is_ternary
from harness.receipts.verify import is_fallback, is_gpu

NOTABLE_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "fma", "f16c", "neon", "asimd")


def field(obj: object, *keys: str | int) -> Any:
    """obj[k1][k2]... or None when any step is missing or not a container."""
    for key in keys:
        if isinstance(obj, Mapping) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def number(value: object, fmt: str = ",.4g") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)[:80]
    return format(value, fmt)


def seconds(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value)
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3f} s"


def byte_size(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def shown(value: object, limit: int = 100) -> str:
    return "-" if value is None else str(value)[:limit]


def kernel_kind(kernel_id: str) -> str:
    if is_gpu(kernel_id):
        return "gpu"
    if is_fallback(kernel_id):
        return "fallback"
    return "ternary" if is_ternary(kernel_id) else "op"


def notable_flags(receipt: Mapping[str, Any]) -> list[str]:
    """The host's CPU flags that matter to the kernels, in a fixed order."""
    flags = field(receipt, "host", "cpu_flags")
    return [f for f in NOTABLE_FLAGS if isinstance(flags, list) and f in flags]
