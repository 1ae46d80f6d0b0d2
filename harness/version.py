"""The installed distribution's version, for `--version` and receipts."""

from importlib.metadata import PackageNotFoundError, version


def harness_version() -> str:
    try:
        return version("bitnet-harness")
    except PackageNotFoundError:
        return "0+unknown"
