"""Format identifiers shared by the reader, the writer and the kernels (see docs/formats.md)."""

from enum import IntEnum


class GGMLType(IntEnum):
    """Tensor type ids as stored in a GGUF tensor-info record."""

    F32 = 0
    F16 = 1
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    I2_S = 36


def type_name(ggml_type: int) -> str:
    """The type's name (`TQ2_0`), or its number for a type id this project does not know."""
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return str(ggml_type)


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
# Formats whose tensors run the plain I2_S kernels when every block holding a weight shares one scale
# (engine.kernels.layouts.prepare_matrix repacks them as I2_S).
ONE_SCALE_FORMATS = (FORMAT_TQ2_0, FORMAT_TQ1_0)

# The instruction-set paths a kernel can take and the LLVM CPU features each needs ("portable" runs anywhere).
# engine.kernels.cpu chooses among them; a receipt names the one each kernel took.
VARIANT_FEATURES: dict[str, tuple[str, ...]] = {
    "avx512vnni": ("avx512vnni", "avx512vl"),
    "avx512bw": ("avx512bw", "avx512vl"),
    "avx2": ("avx2",),
    "portable": (),
}

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


def layer_matrix_shapes(hidden: int, ffn: int, q_dim: int, kv_dim: int) -> dict[str, tuple[int, int]]:
    """(rows, cols) of each per-layer weight matrix, keyed by tensor name part, in forward order."""
    return {
        "attn_q": (q_dim, hidden),
        "attn_k": (kv_dim, hidden),
        "attn_v": (kv_dim, hidden),
        "attn_output": (hidden, q_dim),
        "ffn_gate": (ffn, hidden),
        "ffn_up": (ffn, hidden),
        "ffn_down": (hidden, ffn),
    }


def layer_norm_sizes(hidden: int, ffn: int) -> dict[str, int]:
    """Length of each per-layer RMSNorm weight, keyed by tensor name part."""
    return {"attn_norm": hidden, "attn_sub_norm": hidden, "ffn_norm": hidden, "ffn_sub_norm": ffn}
