"""`bitnet-harness run`: generate text from a model, streaming it as it is decoded, then one speed line.

Without --model it runs a preset model (written once into the cache), so the command works offline; --model
takes a GGUF file or a Hugging Face BitNet folder (converted once into the cache).
Kernels are compiled (or loaded from numba's cache) before the clock starts; the speed line names the kernel
family that ran.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from engine.constants import ARCH_BITNET_B158, FORMAT_I2S
from engine.generate import SamplingParams, generate
from engine.model import Model
from harness.commands.options import (
    DEFAULT_KERNEL,
    DEFAULT_PRESET,
    KernelOpt,
    LogitsChoice,
    MaxMemoryOpt,
    ModelOpt,
    PresetChoice,
    RetuneOpt,
    SeedOpt,
    StrictOpt,
    TemperatureOpt,
    ThreadsOpt,
    TimeoutOpt,
    TopKOpt,
    TopPOpt,
    strict_flag,
)
from harness.phases.load import load_and_warm
from harness.phases.workload import resolve_model
from harness.runtime.limits import resource_limits
from harness.session.model import check_retune

DEFAULT_PROMPT = "The capital of France is"
DEFAULT_LOGITS = LogitsChoice("int8")


def register(app: typer.Typer) -> None:
    """Add `run` to the top-level app."""
    app.command("run")(run_command)


def _status(message: str) -> None:
    typer.echo(message, err=True)


def speed_summary(
    model: Model, prompt_tokens: int, prefill_seconds: float, decode_seconds: list[float]
) -> str:
    """One line: prefill and decode throughput, the kernel family and the logits path."""
    prefill_rate = f"{prompt_tokens / prefill_seconds:.1f} tok/s" if prefill_seconds > 0 else "-"
    decode_total = sum(decode_seconds)
    decode_rate = f"{len(decode_seconds) / decode_total:.2f} tok/s" if decode_total > 0 else "-"
    return (
        f"prefill {prompt_tokens} tok {prefill_rate} | decode {len(decode_seconds)} tok "
        f"{decode_rate} | kernel {model.kernel_family} | logits {model.logits_mode}"
    )


def run_command(
    model_path: ModelOpt = None,
    preset: Annotated[
        PresetChoice, typer.Option("--preset", help="Preset model used when --model is not given.")
    ] = DEFAULT_PRESET,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue.")] = DEFAULT_PROMPT,
    n_tokens: Annotated[int, typer.Option("-n", "--n-tokens", min=0, help="Most tokens to generate.")] = 64,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    retune: RetuneOpt = False,
    logits: Annotated[
        LogitsChoice, typer.Option("--logits", help="int8 tied-embedding logits, or the f32 fallback.")
    ] = DEFAULT_LOGITS,
    strict_loader: StrictOpt = False,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Generate text from a prompt and print the prefill / decode speed."""
    check_retune(retune, [kernel.value])
    with resource_limits(max_memory, timeout):
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        if model_path is None:
            _status(f"model: preset {preset.value} (written to the cache on first use)")
        model_path = resolve_model(model_path, preset.value, FORMAT_I2S, ARCH_BITNET_B158, 0).path
        loaded = load_and_warm(
            model_path,
            kernel=kernel.value,
            threads=threads,
            strict=strict_flag(strict_loader),
            logits=logits.value,
            on_warning=lambda w: _status(f"warning: {w}"),
            retune=retune,
        )
        model = loaded.model
        _status(
            f"loaded {model_path} in {model.load_seconds:.2f} s, kernels ready in {loaded.jit_seconds:.2f} s"
        )
        prompt_ids = model.tokenizer.encode(prompt, add_bos=True)
        stream = model.tokenizer.decode_stream()
        typer.echo(prompt, nl=False)

        def show(token: int) -> None:
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()

        result = generate(model, prompt_ids, n_tokens, params, on_token=show)
        typer.echo(stream.flush())
        if result.stopped_on_eos:
            _status("stopped at end-of-sequence")
        typer.echo(speed_summary(model, len(prompt_ids), result.prefill_seconds, result.decode_seconds))
