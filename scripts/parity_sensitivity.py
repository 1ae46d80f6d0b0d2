"""How sensitive is a model to float noise? Each implementation against itself with one weight nudged.

Writes `<file>.nudged.gguf` beside a llama.cpp-ready file (e.g. the `.llamacpp.gguf` copy the parity command
writes) with blk.0.attn_norm multiplied by (1 + 1e-6), then compares, over the parity command's 64-token
teacher-forced sequence and greedy prompts, the engine (block256) with itself and llama.cpp with itself.
If they move as much as the engine and llama.cpp differ from each other, the parity gap is float noise the
model amplifies (int8 rounding-boundary flips), not a different reading of the model.
Usage: python scripts/parity_sensitivity.py FILE.llamacpp.gguf
"""

import sys
from pathlib import Path

import numpy as np

from engine.gguf_reader import read_gguf
from engine.gguf_writer import TensorSpec, write_gguf
from harness.peers.llama_cpp import _copy_value
from harness.peers.measures import compare_logits
from harness.peers.parity import (
    GREEDY_PROMPTS,
    GREEDY_STEPS,
    LOGIT_TOKENS,
    EngineImpl,
    LlamaCppImpl,
    _logit_sequence,
)

NUDGE = 1e-6
NAME = "blk.0.attn_norm.weight"


def nudged_copy(src: Path) -> Path:
    g = read_gguf(src)
    meta = {k: _copy_value(v, g.metadata_types[k]) for k, v in g.metadata.items() if k != "general.alignment"}

    def data(t):  # noqa: ANN001, ANN202
        arr = np.asarray(t.data)
        if t.name == NAME:
            return (arr.view(np.float32) * np.float32(1 + NUDGE)).view(np.uint8)
        return arr

    specs = [
        TensorSpec(t.name, t.ggml_type, t.shape, t.nbytes, lambda t=t: data(t)) for t in g.tensors.values()
    ]
    out = src.with_name(src.name.removesuffix(".gguf") + ".nudged.gguf")
    write_gguf(out, meta, specs, alignment=g.alignment)
    return out


def self_compare(name: str, a, b, seq: list[int], prompts: list[list[int]]) -> None:  # noqa: ANN001
    lg = compare_logits(a.sequence_logits(seq), b.sequence_logits(seq))
    diverge = []
    for ids in prompts:
        ta, tb = a.greedy(ids, GREEDY_STEPS)[0], b.greedy(ids, GREEDY_STEPS)[0]
        diverge.append(next((i for i, (x, y) in enumerate(zip(ta, tb, strict=True)) if x != y), None))
    print(
        f"{name}: min cosine {lg['min_cosine']:.9f}, max |err| {lg['max_abs_logit_error']:.4g}, "
        f"top-1 {lg['top1_agreement']:.3f}, greedy first divergence per prompt {diverge}",
        flush=True,
    )


def main() -> None:
    src = Path(sys.argv[1])
    nudged = nudged_copy(src)
    engine, engine_n = (EngineImpl(p, "block256", "f32", None, "i2s") for p in (src, nudged))
    tok = engine.model.tokenizer
    ctx = min(engine.model.config.context_length, 128)
    llama, llama_n = (LlamaCppImpl(p, ctx, None) for p in (src, nudged))
    seq = _logit_sequence(llama.tokenize, tok.bos_id, LOGIT_TOKENS)
    prompts = [[tok.bos_id, *tok.encode(p, add_bos=False)] for p in GREEDY_PROMPTS]
    self_compare("engine block256 vs itself nudged", engine, engine_n, seq, prompts)
    self_compare("llama.cpp vs itself nudged", llama, llama_n, seq, prompts)
    self_compare("engine block256 vs llama.cpp (no nudge)", engine, llama, seq, prompts)


if __name__ == "__main__":
    main()
