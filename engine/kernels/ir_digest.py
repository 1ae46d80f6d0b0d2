"""Stale-cache guard for kernels built from code in other modules (IR emitters, or kernels they call).

numba's on-disk cache keys a compiled kernel on the source file that defines it, never on the modules whose
IR emitters or kernels it calls and links in. Such a module therefore names the sha256 of those modules'
sources: an edited one fails the import until the digest, and with it the module's own source, changes
too, so numba recompiles instead of serving machine code built from the old code.
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


def require_ir_digest(sources: ModuleType | Sequence[ModuleType], expected: str, holder: str) -> None:
    """Raise ImportError unless the source files of `sources` (one module, or several read in order) have
    the sha256 `expected` (set in `holder`)."""
    modules = (sources,) if isinstance(sources, ModuleType) else tuple(sources)
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    found = digest.hexdigest()
    if found != expected:
        names = ", ".join(m.__name__ for m in modules)
        raise ImportError(
            f"{names} changed (sha256 {found}); set the digest in {holder} to it so that numba "
            "recompiles the kernels built from them instead of loading stale ones from its cache"
        )
