"""Assembles a complete receipt from what a run measured; every value comes from that run.

A benchmark receipt (`build_receipt`) and a phase receipt of `probe` or `timing` (`build_phase_receipt`) share
the run's facts: kernels and their counters, model, host, threads, kernel choice, load and JIT time.
"""

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numba

from engine import kernel_choice
from engine.generate import SamplingParams
from engine.kernel_choice import Selection
from engine.loader import ModelFile
from engine.model import Model
from harness.machine import noise
from harness.machine.bandwidth import Floor
from harness.machine.host import environment_facts, harness_facts, host_facts, peak_rss_bytes
from harness.receipts.digest import FileDigest, finalize, token_digest
from harness.receipts.files import utc_timestamp
from harness.version import harness_version

Counts = dict[str, dict[str, int]]


def preset_facts(mf: ModelFile) -> tuple[str | None, int | None]:
    """Preset name and seed recorded by the project's writer, or (None, None) for any other file."""
    meta = mf.gguf.metadata
    preset, seed = meta.get("bitnet_harness.preset"), meta.get("bitnet_harness.seed")
    if isinstance(preset, str) and isinstance(seed, int):
        return preset, seed
    return None, None


def model_section(mf: ModelFile, path_label: str, digest: FileDigest) -> dict[str, Any]:
    """The receipt's `model` section: identity (the file's digest, hashed once per run), architecture and
    shape facts."""
    cfg = mf.config
    preset, seed = preset_facts(mf)
    per_format = Counter(check.flavor for check in mf.checks)
    return {
        "path": path_label,
        "sha256": digest.sha256,
        "size_bytes": digest.size,
        "architecture": cfg.arch,
        "preset": preset,
        "preset_seed": seed,
        "format": cfg.weight_format,
        "n_layers": cfg.n_layers,
        "hidden": cfg.hidden,
        "ffn": cfg.ffn,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.context_length,
        "tensors_per_format": dict(sorted(per_format.items())),
    }


def kernel_choice_section(
    selection: Selection,
    variants: dict[str, str],
    ran: set[str],
    prefetch: Iterable[kernel_choice.PrefetchChoice] = (),
    decode_block: str | None = None,
) -> dict[str, Any]:
    """The family per matrix shape, the instruction-set variant of each kernel that ran, the variant of the
    compiled decode block when decode ran through it, and for `auto` how each family was chosen
    (engine.kernel_choice): every round's timings, the verdict and its reason."""
    per_shape = []
    for key, family in sorted(selection.kernels.items()):
        rows, cols = key.split(":", 1)[1].split("x")
        per_shape.append({"shape": [int(rows), int(cols)], "kernel": family})
    section: dict[str, Any] = {
        "requested": selection.mode,
        "per_shape": per_shape,
        "variants": {k: v for k, v in sorted(variants.items()) if k in ran},
    }
    avx2_kinds = {kernel_choice.prefetch_kind(k) for k, v in section["variants"].items() if v == "avx2"}
    record = kernel_choice.prefetch_record(c for c in prefetch if c.kind in avx2_kinds)
    if record is not None:
        section["prefetch"] = record
    if decode_block is not None:
        section["decode_block"] = decode_block
    if selection.mode == "auto":
        section["tuning"] = {
            "method": (
                f"{kernel_choice.ROUNDS} interleaved rounds per shape, median per family; another family "
                f"than {kernel_choice.DEFAULT_FAMILY} only if faster in every round and by "
                f"{kernel_choice.MIN_GAIN:.0%} in the median; spread > {kernel_choice.MAX_SPREAD:.0%} keeps "
                f"{kernel_choice.DEFAULT_FAMILY}, uncached"
            ),
            "retuned": selection.retuned,
            "seconds": selection.seconds,
            "cache_key": dict(selection.cache_key),
            "shapes": [_shape_tuning(key, selection) for key in sorted(selection.shapes)],
        }
    return section


def _shape_tuning(key: str, selection: Selection) -> dict[str, Any]:
    flavor, dims = key.split(":", 1)
    rows, cols = dims.split("x")
    timing = selection.shapes[key]
    return {
        "flavor": flavor,
        "shape": [int(rows), int(cols)],
        "kernel": timing.choice,
        "reason": timing.reason,
        "noisy": timing.noisy,
        "cached": selection.cached.get(key, False),
        "calls_per_round": timing.calls_per_round,
        "rounds_seconds": {f: list(r) for f, r in timing.rounds.items()},
        "median_seconds": timing.median,
        "spread": timing.spread,
        "unsupported": dict(timing.errors),
    }


def bandwidth_section(floor: Floor, model: Model, tokens_per_second: float) -> dict[str, Any]:
    """Decode speed against the memory floor: weight bytes read per token over measured read bandwidth, with
    the probes' every pass and whether they agreed."""
    read_gbps = floor.read_gbps
    decode_floor = read_gbps * 1e9 / model.weight_bytes_per_token
    return {
        "read_gbps": read_gbps,
        "weight_bytes_per_token": model.weight_bytes_per_token,
        "decode_floor_tok_s": decode_floor,
        "ratio_to_floor": tokens_per_second / decode_floor if decode_floor > 0 else 0.0,
        **floor.measurement(),
    }


def noise_section(
    usage: noise.SystemUsage | None, benchmark: dict[str, Any], floor: Floor | None
) -> dict[str, Any]:
    """Whether the run was noisy and why: the system over the measured phases, the benchmark's samples, and
    the bandwidth probes' agreement."""
    reason = floor.noisy_reason if floor is not None else None
    return noise.assess(usage, benchmark, [reason] if reason else [])


DECODE_PHASES = {"timing", "benchmark"}  # the phases that decode tokens (a probe alone decodes none)


def _run_facts(
    *,
    started_at: str,
    model: Model,
    model_section: dict[str, Any],
    phases: dict[str, Any],
    counts: Counts,
    variants: dict[str, str],
    strict: bool,
    jit_seconds: float,
) -> dict[str, Any]:
    """What every receipt records: the counted kernels, the model and host, threads, kernel choice, times."""
    return {
        "schema_version": "1.0.0",
        "started_at": started_at,
        "compute_path": "real",
        "backend": "cpu",
        "kernels": sorted(counts),
        "kernel_counts": counts,
        "environment": environment_facts(strict),
        "model": model_section,
        "phases": phases,
        "threads": numba.get_num_threads(),
        "kernel_choice": kernel_choice_section(
            model.kernel_selection,
            variants,
            set(counts),
            model.prefetch_choices(),
            model.decode_block if DECODE_PHASES & set(phases) else None,
        ),
        "harness": harness_facts(harness_version()),
        "host": host_facts(),
        "jit_seconds": jit_seconds,
        "load_seconds": model.load_seconds,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _workload(prompt_text: str | None, prompt: list[int], params: SamplingParams) -> dict[str, Any]:
    """The prompt a run prefilled and the sampling of the tokens it generated."""
    return {
        "prompt": {"text": prompt_text, "token_count": len(prompt), "token_ids_sha256": token_digest(prompt)},
        "sampling": {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p},
        "seed": params.seed,
    }


def build_phase_receipt(
    *,
    started_at: str,
    model: Model,
    model_section: dict[str, Any],
    phase: str,
    section: dict[str, Any],
    counts: Counts,
    variants: dict[str, str],
    strict: bool,
    jit_seconds: float,
    prompt_text: str | None = None,
    prompt: list[int] | None = None,
    params: SamplingParams | None = None,
) -> dict[str, Any]:
    """A finalized receipt of one phase run on its own (`probe` or `timing`): `counts` are that phase's kernel
    calls and `variants` the instruction-set path of each; the prompt and sampling when the phase had them."""
    receipt = _run_facts(
        started_at=started_at,
        model=model,
        model_section=model_section,
        phases={phase: section},
        counts=counts,
        variants=variants,
        strict=strict,
        jit_seconds=jit_seconds,
    )
    if prompt is not None:
        receipt |= _workload(prompt_text, prompt, params or SamplingParams())
    receipt["timestamp"] = utc_timestamp()
    return finalize(receipt)


def build_receipt(
    *,
    started_at: str,
    model: Model,
    model_section: dict[str, Any],
    phases: dict[str, Any],
    prompt_text: str | None,
    prompt: list[int],
    params: SamplingParams,
    tokens_requested: int,
    output_tokens: list[int],
    strict: bool,
    jit_seconds: float,
    floor: Floor | None,
    usage: noise.SystemUsage | None = None,
    peer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A finalized receipt (content digest set) for one benchmark run of `model`; `floor` holds the bandwidth
    probes (None: not measured), `usage` the system over the measured phases; `peer` is the section of
    another engine benchmarked interleaved on the same file (harness.peers.vs_llama_cpp)."""
    bench = phases["benchmark"]
    tps = bench["summary"]["tokens_per_second"]
    receipt = _run_facts(
        started_at=started_at,
        model=model,
        model_section=model_section,
        phases=phases,
        counts=model.trace.snapshot(),
        variants=model.kernel_variants(),
        strict=strict,
        jit_seconds=jit_seconds,
    )
    receipt |= _workload(prompt_text, prompt, params)
    receipt |= {
        "deterministic": True,
        "tokens_requested": tokens_requested,
        "tokens_generated": len(output_tokens),
        "tokens_per_second": tps,
        "output_digest": {"sha256": token_digest(output_tokens), "count": len(output_tokens)},
    }
    if floor is not None:
        receipt["bandwidth"] = bandwidth_section(floor, model, tps)
    receipt["noise"] = noise_section(usage, bench, floor)
    if peer is not None:
        receipt["peer"] = peer
    receipt["timestamp"] = utc_timestamp()
    return finalize(receipt)
