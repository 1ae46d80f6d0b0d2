"""Which machine a receipt was measured on: a fingerprint of the host facts every receipt records.

Receipts from different machines are different series (asv's model): history groups them by this fingerprint
and `compare` refuses a pair whose machines differ. The fingerprint covers what decides the speed of this
engine's kernels: the CPU model, the usable cores, the instruction-set flags and the memory size (rounded to
whole GiB, so a kernel that reserves a few MiB more does not make a new machine). Other CPU flags (security
mitigations, virtualisation hints a newer kernel shows) are left out for the same reason.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The instruction-set families whose presence changes which kernel code runs or how fast it is.
_ISA_FLAG = re.compile(r"(sse|ssse|avx|fma|f16c|bmi|amx|popcnt|vnni|vpclmul|gfni|neon|asimd|sve)")
_GIB = 1 << 30
ID_LENGTH = 12


@dataclass(frozen=True)
class Machine:
    """A machine as receipts describe it; `id` is the first 12 hex digits of the facts' sha256."""

    id: str
    cpu_model: str | None
    cores: int | None
    memory_gib: int | None
    isa_flags: tuple[str, ...]

    def facts(self) -> dict[str, Any]:
        """The fingerprinted facts by name (what two machines are compared on)."""
        return {
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "memory_gib": self.memory_gib,
            "isa_flags": list(self.isa_flags),
        }

    @property
    def label(self) -> str:
        """One line for people: CPU model, cores, memory."""
        memory = f"{self.memory_gib} GiB" if self.memory_gib is not None else "memory unknown"
        cores = f"{self.cores} cores" if self.cores is not None else "cores unknown"
        return f"{self.cpu_model or 'unknown CPU'}, {cores}, {memory}"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def machine_of(receipt: Mapping[str, Any]) -> Machine:
    """The machine a receipt's `host` section describes (missing facts count as unknown, not as an error)."""
    host = receipt.get("host")
    host = host if isinstance(host, Mapping) else {}
    cpu = host.get("cpu_model")
    flags = host.get("cpu_flags")
    isa = (
        tuple(sorted({f for f in flags if isinstance(f, str) and _ISA_FLAG.match(f)}))
        if isinstance(flags, list)
        else ()
    )
    memory = _int_or_none(host.get("memory_bytes"))
    facts = {
        "cpu_model": cpu if isinstance(cpu, str) else None,
        "cores": _int_or_none(host.get("cores")),
        "memory_gib": round(memory / _GIB) if memory is not None else None,
        "isa_flags": list(isa),
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:ID_LENGTH]
    return Machine(digest, facts["cpu_model"], facts["cores"], facts["memory_gib"], isa)


def differences(a: Machine, b: Machine) -> list[str]:
    """The names of the fingerprinted facts that differ between two machines."""
    fa, fb = a.facts(), b.facts()
    return [key for key in fa if fa[key] != fb[key]]
