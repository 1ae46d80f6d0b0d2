"""Format identifiers shared by the reader, the writer and the kernels (see FORMATS.md)."""

from enum import IntEnum


class GGMLType(IntEnum):
    """Tensor type ids as stored in a GGUF tensor-info record."""

    F32 = 0
    F16 = 1
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    I2_S = 36


class FileType(IntEnum):
    """Values of `general.file_type` for the ternary formats."""

    MOSTLY_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    MOSTLY_I2_S = 40


GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
GGUF_DEFAULT_ALIGNMENT = 32

ARCH_BITNET_B158 = "bitnet-b1.58"
ARCH_BITNET = "bitnet"
ARCHITECTURES = (ARCH_BITNET_B158, ARCH_BITNET)

# Weight formats, by the names the CLI and the loader use. The three I2_S flavors share type id 36
# and are told apart by byte size.
FORMAT_I2S = "i2s"
FORMAT_QK256 = "qk256"
FORMAT_BITNET32 = "bitnet32"
FORMAT_TQ2_0 = "tq2_0"
FORMAT_TQ1_0 = "tq1_0"
WEIGHT_FORMATS = (FORMAT_I2S, FORMAT_TQ2_0, FORMAT_TQ1_0, FORMAT_QK256, FORMAT_BITNET32)

FORMAT_GGML_TYPE = {
    FORMAT_I2S: GGMLType.I2_S,
    FORMAT_QK256: GGMLType.I2_S,
    FORMAT_BITNET32: GGMLType.I2_S,
    FORMAT_TQ2_0: GGMLType.TQ2_0,
    FORMAT_TQ1_0: GGMLType.TQ1_0,
}
FORMAT_FILE_TYPE = {
    FORMAT_I2S: FileType.MOSTLY_I2_S,
    FORMAT_QK256: FileType.MOSTLY_I2_S,
    FORMAT_BITNET32: FileType.MOSTLY_I2_S,
    FORMAT_TQ2_0: FileType.MOSTLY_TQ2_0,
    FORMAT_TQ1_0: FileType.MOSTLY_TQ1_0,
}

# Per-layer weight matrices, in the order the forward pass uses them.
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LAYER_NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")
