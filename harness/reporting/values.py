"""Receipt values as text for every report (terminal, markdown, HTML): a missing or malformed field shows as
`-` instead of failing, numbers in readable units."""

from collections.abc import Mapping
from typing import Any

from harness.receipts.expectations import is_ternary
from harness.receipts.gates.kernels import is_fallback, is_gpu

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


def model_facts(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The receipt's model as (label, text) rows."""
    model = field(receipt, "model")

    def joined(*keys: str) -> str:
        return " / ".join(shown(field(model, k)) for k in keys)

    return [
        ("path", shown(field(model, "path"), 300)),
        ("sha256", shown(field(model, "sha256"))),
        ("size", byte_size(field(model, "size_bytes"))),
        ("architecture / format", joined("architecture", "format")),
        ("preset (seed)", f"{shown(field(model, 'preset'))} ({shown(field(model, 'preset_seed'))})"),
        ("layers / hidden / ffn / vocab", joined("n_layers", "hidden", "ffn", "vocab_size")),
        ("heads / kv heads / head dim", joined("n_heads", "n_kv_heads", "head_dim")),
        ("tensors per format", shown(field(model, "tensors_per_format"), 200)),
    ]


def host_facts(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The receipt's host as (label, text) rows."""
    host = field(receipt, "host")
    return [
        ("cpu", f"{shown(field(host, 'cpu_model'))} ({shown(field(host, 'cores'))} cores)"),
        ("notable flags", " ".join(notable_flags(receipt)) or "-"),
        ("memory", byte_size(field(host, "memory_bytes"))),
        ("os", shown(field(host, "os"))),
        (
            "python / numba / llvmlite / numpy",
            " / ".join(shown(field(host, k)) for k in ("python", "numba", "llvmlite", "numpy")),
        ),
        ("threading layer", shown(field(host, "threading_layer"))),
    ]
