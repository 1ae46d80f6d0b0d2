"""Errors the engine raises for bad input: each message is one line a user can act on."""


class EngineError(Exception):
    """Base class: the CLI prints the message on one line and exits 2."""


class GGUFFormatError(EngineError):
    """The file is not a well-formed GGUF v3 file (truncated, hostile, inconsistent)."""


class TensorSizeError(GGUFFormatError):
    """A tensor's byte size matches none of the layouts its type allows."""


class TensorDataError(GGUFFormatError):
    """A tensor's bytes hold what its layout never stores: a lost or invalid scale, another layout's codes."""


class UnsupportedModelError(EngineError):
    """The file is valid GGUF but describes a model this engine does not run."""


def check_choice(
    what: str, value: str, choices: tuple[str, ...], error: type[EngineError] = EngineError
) -> None:
    """One-line error naming the valid choices when `value` is not among them."""
    if value not in choices:
        raise error(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
