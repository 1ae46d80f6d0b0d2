"""Hugging Face transformers' BitNetForCausalLM as a parity reference, built on the CPU from a GGUF file.

transformers ships the official PyTorch implementation of microsoft/bitnet-b1.58-2B-4T, written outside this
project: `models/bitnet` (LLaMA's attention and decoder with a sub-norm before the attention output and one
before the FFN's down matrix, `hidden_act` relu2 or silu) and `integrations/bitnet.py` (`BitLinear`: ternary
weights packed four to a byte along the rows, one per-tensor `weight_scale` that DIVIDES the output,
per-token absmax int8 activations). The model is built from the file the engine runs: the config from its
metadata, every matrix packed with transformers' own `pack_weights` and its scale inverted, the norms, the
embedding tied to the logits. The vocabulary becomes a transformers fast tokenizer built locally (no hub
download). Given a Hugging Face folder instead, transformers loads it itself (`from_pretrained`, local files
only) and the engine runs the folder's conversion (engine.hf_checkpoint).

What transformers cannot express, refused with the reason: matrices with more than one scale (TQ2_0/TQ1_0/
BitNet-32 files whose blocks carry different scales), QK256 (values +-1 and +-2), an output matrix not tied
to the embedding, SentencePiece vocabularies (their tokenizer is not built here). Both architectures run:
`bitnet-b1.58` as hidden_act relu2, `bitnet` as silu.

The engine's `token` activation mode quantizes activations as BitLinear does, so it is the mode judged;
`block256` (llama.cpp's Q8_K blocks) is reported beside it. The reference's own noise floor comes from two
self-checks: the same model fed one token at a time (KV cache) against one batch, and float64 against float32.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ModelConfig
from engine.errors import EngineError
from engine.hf_checkpoint import ensure_converted, is_checkpoint_folder
from engine.hf_tokenizer import tokenizer_json
from engine.loader import ModelFile, load_file
from engine.model_io import Ternary, read_weights, ternary_values
from engine.synth import default_cache_dir
from harness.errors import HarnessError
from harness.peers.measures import Implementation, Peer, margin

REFERENCE_TRANSFORMERS = "transformers"
MATCHING_MODE = "token"  # the engine mode that quantizes activations as BitLinear does
HIDDEN_ACT = {"relu2": "relu2", "silu": "silu"}  # engine ffn_act -> transformers' hidden_act


# -------------------------------------------------------------------- availability
def transformers_missing() -> str | None:
    """None when torch and transformers (with BitNet) import, else the reason (one line)."""
    try:
        import torch  # noqa: F401
        from transformers import BitNetForCausalLM  # noqa: F401
    except ImportError as exc:
        return f"transformers with torch does not import ({exc}); pip install '.[reference]' adds them"
    return None


def reference_version() -> str:
    """`transformers <version> (torch <version>)`."""
    versions = []
    for package in ("transformers", "torch"):
        try:
            versions.append(importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            versions.append("unknown")
    return f"transformers {versions[0]} (torch {versions[1]})"


def _torch() -> Any:
    """torch with TorchDynamo off: BitLinear's torch.compile decorators would spend ~19 s compiling."""
    import torch
    import torch._dynamo

    torch._dynamo.config.disable = True
    return torch


class UnpackOnce:
    """transformers' `unpack_weights`, run once per packed matrix instead of on every forward.

    BitLinear unpacks its 2-bit weights again at each call (a pure function of the packed tensor), which made
    unpacking 3/4 of a parity run's time. While `active()`, calls go through a memo keyed by the packed
    tensor: the same function computes every result, each only once (up to `budget` bytes of results).
    """

    def __init__(self, budget: int = 1 << 30) -> None:
        self.budget = budget
        self.used = 0
        self.memo: dict[tuple[int, Any], tuple[Any, Any]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        import transformers.integrations.bitnet as bitnet

        original = bitnet.unpack_weights

        def unpack(packed: Any, dtype: Any) -> Any:
            hit = self.memo.get((id(packed), dtype))
            if hit is not None and hit[0] is packed:
                return hit[1]
            out = original(packed, dtype=dtype)
            size = out.element_size() * out.nelement()
            if self.used + size <= self.budget:
                self.memo[(id(packed), dtype)] = (packed, out)
                self.used += size
            return out

        bitnet.unpack_weights = unpack
        try:
            yield
        finally:
            bitnet.unpack_weights = original


# -------------------------------------------------------------------- the model and tokenizer
def hf_config(cfg: ModelConfig, bos_id: int, eos_id: int) -> Any:
    """BitNetConfig for the engine's config: same shape, relu2 or silu, tied embedding, BitLinear layers."""
    from transformers import BitNetConfig, BitNetQuantConfig

    if cfg.ffn_act not in HIDDEN_ACT:
        raise HarnessError(f"transformers' BitNet has no FFN activation {cfg.ffn_act!r}")
    return BitNetConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        hidden_act=HIDDEN_ACT[cfg.ffn_act],
        max_position_embeddings=cfg.context_length,
        rms_norm_eps=cfg.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        quantization_config=BitNetQuantConfig(
            linear_class="bitlinear", quantization_mode="offline"
        ).to_dict(),
    )


# GGUF tensor part -> transformers module path inside `model.layers.N`.
MODULES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_sub_norm": "mlp.ffn_sub_norm",
}


def hf_state_dict(model_file: ModelFile) -> dict[str, Any]:
    """The file's weights in transformers' layout: packed ternary rows, weight_scale = 1 / scale."""
    torch = _torch()
    from transformers.integrations.bitnet import VALUES_PER_ITEM, pack_weights

    if "output.weight" in model_file.gguf.tensors:
        raise HarnessError(
            "the file has an output matrix of its own; the reference ties logits to the embedding"
        )
    state: dict[str, Any] = {}
    for name, weight in read_weights(model_file).items():
        if name == "token_embd.weight":
            state["model.embed_tokens.weight"] = torch.from_numpy(np.array(weight.load(), np.float32))
            continue
        if name == "output_norm.weight":
            state["model.norm.weight"] = torch.from_numpy(np.array(weight.load(), np.float32))
            continue
        _, layer, part, _ = name.split(".")
        prefix = f"model.layers.{layer}.{MODULES[part]}"
        if not isinstance(weight, Ternary):
            state[f"{prefix}.weight"] = torch.from_numpy(np.array(weight.load(), np.float32))
            continue
        try:
            values, scale = ternary_values(name, weight)
        except EngineError as exc:
            raise HarnessError(f"transformers' BitLinear cannot hold this file's weights: {exc}") from None
        if values.shape[0] % VALUES_PER_ITEM:
            raise HarnessError(
                f"tensor {name!r} has {values.shape[0]} rows, not a multiple of {VALUES_PER_ITEM}"
            )
        state[f"{prefix}.weight"] = pack_weights(torch.from_numpy(values.astype(np.int8)))
        # BitLinear divides its output by weight_scale: the inverse of the file's multiplier.
        state[f"{prefix}.weight_scale"] = torch.tensor([1.0 / scale], dtype=torch.float32)
    return state


def build_model(model_file: ModelFile, bos_id: int, eos_id: int) -> Any:
    """BitNetForCausalLM (float32, eval mode) holding the file's weights in BitLinear layers."""
    torch = _torch()
    from transformers import BitNetForCausalLM
    from transformers.integrations.bitnet import replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    config = hf_config(model_file.config, bos_id, eos_id)
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = BitNetForCausalLM(config)
    replace_with_bitnet_linear(
        model, modules_to_not_convert=["lm_head"], quantization_config=BitNetQuantConfig()
    )
    state = hf_state_dict(model_file)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise HarnessError(
            f"transformers' BitNet did not take the weights: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    model.lm_head.weight = model.model.embed_tokens.weight
    # Buffers computed at construction (rotary frequencies) were made on the meta device: make them again.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.eval()
    return model


def fast_tokenizer(metadata: dict[str, object]) -> Any:
    """transformers' PreTrainedTokenizerFast over the file's vocabulary (special-token text is plain text)."""
    from tokenizers import Tokenizer as Backend
    from transformers import PreTrainedTokenizerFast

    doc = tokenizer_json(metadata)
    tokens = metadata["tokenizer.ggml.tokens"]
    bos = tokens[int(metadata["tokenizer.ggml.bos_token_id"])]  # type: ignore[index, call-overload]
    eos = tokens[int(metadata["tokenizer.ggml.eos_token_id"])]  # type: ignore[index, call-overload]
    return PreTrainedTokenizerFast(
        tokenizer_object=Backend.from_str(json.dumps(doc)),
        bos_token=bos,
        eos_token=eos,
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )


# -------------------------------------------------------------------- the reference as an Implementation
class TransformersImpl:
    """BitNetForCausalLM on the CPU: sequences as one batch, greedy steps through its KV cache.

    `one_token_at_a_time()` and `in_float64()` give views of the same weights that differ in one thing
    only (the evaluation schedule, the float precision): the reference's own noise floor.
    """

    incremental = False

    def __init__(self, model: Any, tokenizer: Any, threads: int | None) -> None:
        torch = _torch()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.dtype = torch.float32
        self.unpacked = UnpackOnce()

    @classmethod
    def from_gguf(cls, model_file: ModelFile, threads: int | None) -> TransformersImpl:
        """Built from a GGUF file's weights and vocabulary."""
        meta = model_file.gguf.metadata
        bos = int(meta["tokenizer.ggml.bos_token_id"])  # type: ignore[call-overload]
        eos = int(meta["tokenizer.ggml.eos_token_id"])  # type: ignore[call-overload]
        return cls(build_model(model_file, bos, eos), fast_tokenizer(meta), threads)

    @classmethod
    def from_folder(cls, folder: Path, threads: int | None) -> TransformersImpl:
        """Loaded by transformers itself from a Hugging Face folder (`from_pretrained`, local files only)."""
        _torch()
        from transformers import AutoTokenizer, BitNetForCausalLM

        try:
            model = BitNetForCausalLM.from_pretrained(
                folder, local_files_only=True, attn_implementation="eager"
            )
            tokenizer = AutoTokenizer.from_pretrained(
                folder, local_files_only=True, split_special_tokens=True
            )
        except (OSError, ValueError, ImportError) as exc:
            raise HarnessError(f"transformers cannot load {folder}: {str(exc).splitlines()[0]}") from None
        model.eval()
        return cls(model, tokenizer, threads)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def one_token_at_a_time(self) -> TransformersImpl:
        view = copy.copy(self)
        view.incremental = True
        return view

    def in_float64(self) -> TransformersImpl:
        view = copy.copy(self)
        view.model = copy.deepcopy(self.model).to(self.torch.float64)
        view.dtype = self.torch.float64
        return view

    def noise_views(self) -> list[tuple[str, Implementation]]:
        return [
            (
                "one token at a time through the KV cache, not one batch",
                self.one_token_at_a_time(),
            ),
            ("float64, not float32", self.in_float64()),
        ]

    def _forward(self, ids: Sequence[int], cache: Any) -> tuple[np.ndarray, Any]:
        """Logits [len(ids), vocab] as float64 numpy after feeding `ids` (through `cache` when given)."""
        torch = self.torch
        with torch.inference_mode(), self.unpacked.active():
            out = self.model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long), cache=cache, use_cache=True
            )
        return out.logits[0].to(torch.float64).numpy(), out.cache

    def _feed(self, ids: Sequence[int]) -> tuple[np.ndarray, Any]:
        if not self.incremental:
            return self._forward(ids, None)
        rows, cache = [], None
        for token in ids:
            logits, cache = self._forward([int(token)], cache)
            rows.append(logits[-1])
        return np.stack(rows), cache

    def sequence_logits(self, ids: Sequence[int]) -> np.ndarray:
        return self._feed(ids)[0]

    def greedy(self, prompt: Sequence[int], steps: int) -> tuple[list[int], list[float]]:
        all_logits, cache = self._feed(prompt)
        logits = all_logits[-1]
        out, margins = [], []
        for _ in range(steps):
            token = int(np.argmax(logits))
            out.append(token)
            margins.append(margin(logits))
            step_logits, cache = self._forward([token], cache)
            logits = step_logits[-1]
        return out, margins


def transformers_peer(model: Path, threads: int | None) -> Peer:
    """transformers on a GGUF file (built from its weights) or a Hugging Face folder (loaded by transformers
    itself while the engine runs the folder's conversion, written once into the cache)."""
    reason = transformers_missing()
    if reason is not None:
        raise HarnessError(reason)
    source = Path(model)
    if is_checkpoint_folder(source):
        try:
            path = ensure_converted(source, default_cache_dir())
        except EngineError as exc:
            raise HarnessError(f"cannot convert {source}: {exc}") from None
        changes = [f"the engine runs {path.name}, converted from the folder; transformers loads the folder"]
        reference = TransformersImpl.from_folder(source, threads)
    elif source.is_file():
        path, changes = source, []
        try:
            reference = TransformersImpl.from_gguf(load_file(path), threads)
        except EngineError as exc:
            raise HarnessError(f"transformers cannot run {source}: {exc}") from None
    else:
        raise HarnessError(f"model {source} is neither a file nor a Hugging Face folder (with config.json)")
    return Peer(
        kind=REFERENCE_TRANSFORMERS,
        version=reference_version(),
        matching_mode=MATCHING_MODE,
        engine_path=path,
        model={
            "source": str(source),
            "compared_file": str(path),
            "converted": bool(changes),
            "changes": changes,
        },
        open=lambda context: reference,
        causes={
            "token": "float summation order (the engine's SIMD kernels and attention, torch's BLAS)",
            "block256": "activation scales per 256 values (llama.cpp's Q8_K) against BitLinear's per token",
        },
    )
