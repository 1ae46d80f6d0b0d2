"""Strict-loader mode: exact tensor sizes only. Off by default; BITNET_STRICT_MODE or --strict-loader."""

import os
from collections.abc import Mapping

STRICT_ENV = "BITNET_STRICT_MODE"
_TRUE_VALUES = {"1", "true"}


def strict_mode_from_env(env: Mapping[str, str] | None = None) -> bool:
    """True when BITNET_STRICT_MODE is `1` or `true` (any case); anything else, or unset, is permissive."""
    value = (os.environ if env is None else env).get(STRICT_ENV, "")
    return value.strip().lower() in _TRUE_VALUES


def resolve_strict(flag: bool | None, env: Mapping[str, str] | None = None) -> bool:
    """An explicit flag wins; otherwise the environment decides."""
    return flag if flag is not None else strict_mode_from_env(env)
