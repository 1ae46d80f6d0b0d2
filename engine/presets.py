"""Model shapes: a test-sized model, a ~100M model and the 2B-4T shape (synthetic), and the trained fixture.

Every matrix's column count (hidden or ffn) is a multiple of 256, so every weight format holds every preset.
"""

from dataclasses import dataclass

from engine.constants import layer_matrix_shapes
from engine.errors import EngineError


@dataclass(frozen=True)
class Preset:
    """Hyperparameters of one model shape (the fields the GGUF metadata records)."""

    name: str
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    context_length: int
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, cols) of each per-layer weight matrix, keyed by tensor name part."""
        return layer_matrix_shapes(self.hidden, self.ffn, self.head_dim * self.n_heads, self.kv_dim)

    def n_params(self) -> int:
        """Parameter count: tied embedding, norms and the ternary matrices."""
        per_layer = sum(r * c for r, c in self.matrix_shapes().values()) + 3 * self.hidden + self.ffn
        return self.vocab_size * self.hidden + self.hidden + self.n_layers * per_layer


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            n_layers=2,
            hidden=256,
            ffn=512,
            n_heads=4,
            n_kv_heads=2,
            vocab_size=1024,
            context_length=256,
        ),
        Preset(
            "small",
            n_layers=12,
            hidden=768,
            ffn=2048,
            n_heads=12,
            n_kv_heads=4,
            vocab_size=32000,
            context_length=1024,
        ),
        # Real weights, not synthetic: trained on Python's own documentation by scripts/train_fixture.py and
        # committed in engine/data (see engine/trained.py); the shape the training script builds.
        Preset(
            "trained",
            n_layers=4,
            hidden=256,
            ffn=768,
            n_heads=4,
            n_kv_heads=2,
            vocab_size=2048,
            context_length=256,
            rope_theta=10000.0,
        ),
        Preset(
            "2b-4t",
            n_layers=30,
            hidden=2560,
            ffn=6912,
            n_heads=20,
            n_kv_heads=5,
            vocab_size=128256,
            context_length=4096,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or an EngineError listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise EngineError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
