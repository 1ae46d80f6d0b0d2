"""Stale-cache guard for kernels whose LLVM IR is emitted by another module.

numba's on-disk cache keys a compiled kernel on the source file that defines it, never on the modules whose
IR emitters it calls. A kernel module therefore names the sha256 of its emitter module: an edited emitter
fails the import until the digest, and with it the kernel module's own source, changes too, so numba
recompiles instead of serving machine code built from the old IR.
"""

import hashlib
from pathlib import Path
from types import ModuleType


def require_ir_digest(emitters: ModuleType, expected: str, holder: str) -> None:
    """Raise ImportError unless `emitters`' source file has the sha256 `expected` (set in `holder`)."""
    found = hashlib.sha256(Path(emitters.__file__).read_bytes()).hexdigest()
    if found != expected:
        raise ImportError(
            f"{emitters.__name__} changed (sha256 {found}); set IR_SHA256 in {holder} to it so that numba "
            "recompiles the kernels built from it instead of loading stale ones from its cache"
        )
