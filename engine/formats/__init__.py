"""Numpy reference pack/unpack for every weight format; `FORMATS[name]` maps a format name to its module.

Every module offers expected_nbytes(rows, cols), pack(values, scales), unpack(raw, rows, cols) and
dequantize(raw, rows, cols) (see docs/architecture.md); the kernels are tested against these.
"""

from types import ModuleType

from engine.constants import FORMAT_BITNET32, FORMAT_I2S, FORMAT_QK256, FORMAT_TQ1_0, FORMAT_TQ2_0
from engine.formats import bitnet32, i2s, qk256, tq1_0, tq2_0
from engine.formats.common import FormatError

FORMATS: dict[str, ModuleType] = {
    FORMAT_I2S: i2s,
    FORMAT_TQ2_0: tq2_0,
    FORMAT_TQ1_0: tq1_0,
    FORMAT_QK256: qk256,
    FORMAT_BITNET32: bitnet32,
}

__all__ = ["FORMATS", "FormatError"]
